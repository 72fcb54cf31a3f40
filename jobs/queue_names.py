"""The queues the product runs, highest priority first: the one place that names them.

Free of imports, so the settings can build django-rq's `RQ_QUEUES` from it.
"""

HIGH = "high"
DEFAULT = "default"
LOW = "low"

#: Every queue, highest priority first: workers drain them in this order.
QUEUE_NAMES: tuple[str, ...] = (HIGH, DEFAULT, LOW)
