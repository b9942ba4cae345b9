"""RabbitMQ: consuming, deliveries, nodes, topology, signed identity, dead letters."""
