"""vbapi-upsert-worker: create-or-update batches from RabbitMQ into PostgreSQL."""
