"""Real-time fraud scoring on Kafka: command line and settings."""
