"""The AsyncAPI 3.0.0 document of the worker's AMQP interface.  Pure: a registry in, YAML out.

It describes the worker as its producers see it: they *send* a batch to the topic exchange
``vbapi`` (one message per entity, routing key = the entity name) and *receive* the reply,
on their ``reply_to`` queue or on ``vbapi.replies``.  Operators *receive* dead letters from
``vbapi.dead``; the retry queues and the request queue are documented as channels only
(the worker alone uses them).  ``upsert-worker docs asyncapi`` writes the result to
``docs/asyncapi.yaml``.

Payloads come from :mod:`schemas.jsonschema`.  Each entity's item schema is written once,
under ``components/schemas/<Entity>``, and referenced: 730 inline copies would make the
document several times larger.

- :mod:`~schemas.asyncapi.names`: the exchange, queue, header and component names, and
  references and AMQP bindings;
- :mod:`~schemas.asyncapi.headers`: the schemas of headers and properties;
- :mod:`~schemas.asyncapi.messages`: a batch per entity, the reply, retry copy, dead letter;
- :mod:`~schemas.asyncapi.channels`: the channels and the operations on them;
- :mod:`~schemas.asyncapi.rendering`: the document, assembled and written as YAML.
"""

from schemas.asyncapi.rendering import render_asyncapi

__all__ = ["render_asyncapi"]
