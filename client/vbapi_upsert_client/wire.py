"""The few names on the wire a producer writes and reads.  The worker takes these from here
(worker/core/wire.py), and its exchange name (worker/amqp/topology.py) is checked against
REQUEST_EXCHANGE by tests/unit/test_client_package.py; the client imports nothing of the
worker."""

from __future__ import annotations

# The durable topic exchange batches are published to.
REQUEST_EXCHANGE = "vbapi"
# RabbitMQ's direct reply-to pseudo-queue.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

JSON_CONTENT_TYPE = "application/json"
# The longest message_id (and any other AMQP short string) in UTF-8 bytes.
MAX_MESSAGE_ID_BYTES = 255

# A request's headers; a reply carries them back.
PATH_HEADER = "path"
DATABASE_HEADER = "vbasoftware-database"
# A request's header asking for a dry run: answered with what each item would get, nothing
# written, nothing recorded; the reply says ``debug.dryRun: true``.
DRY_RUN_HEADER = "x-upsert-dry-run"
# A reply's own header: 207, or the whole-message problem's status.
STATUS_HEADER = "status"

# The routing key of a batch whose path names no entity.
UNKNOWN_ROUTE = "unknown"
