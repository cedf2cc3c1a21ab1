"""Messaging: the events (`events.py`), the bus and the one consumer loop (`bus.py`), a service's
bootstrap (`service.py`), its settings (`config.py`), logs, AWS clients and the health file."""
