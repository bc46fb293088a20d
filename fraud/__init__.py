"""Real-time fraud scoring on Kafka: the command line (cli.py) and the worker put together (worker.py)."""
