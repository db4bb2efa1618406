"""Section classifier: type tags, features, training, serving and the versioned model folder.

    itemtype.py  deterministic [Type] tags (Paper, Blog, Package, Major/Minor/Patch Release, ...)
    features.py  Doc and the one feature builder used by training and serving
    ngrams.py    n-gram counts of a fitted vocabulary with numpy (scikit-learn's matrix, faster)
    train.py     train_section_model / train_relevance_model -> measured models (TrainResult)
    predict.py   SectionModel, RelevanceModel, classify_items -> Prediction
    registry.py  models/<version>/ on disk: atomic save, checked load, CURRENT, rollback
    stage.py     the run's classify stage (pipeline wiring)

Nothing is imported here so that `import aggregator.classify.itemtype` stays light (no scikit-learn).
"""
