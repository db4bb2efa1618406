"""aggregator: finds, classifies and queues candidate items for a weekly AI newsletter."""

__version__ = "0.1.0"
USER_AGENT = f"aggregator/{__version__} (+https://github.com/aggregator-newsletter/aggregator)"
