"""Wire contracts (Avro schemas) and their Confluent-framed codec."""
