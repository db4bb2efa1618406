"""The review page: a FastAPI app (app.py), who may decide (auth.py), Jinja2 templates, and static
files (htmx vendored from npm, the page's own script and style)."""
