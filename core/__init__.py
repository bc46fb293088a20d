"""What streams, models and ops_api all build on: settings, features, decisions, metrics."""
