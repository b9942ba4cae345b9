"""The operator console, ``upsert-worker console``: a web page over the same operations as
the ``status`` and ``dlq`` commands, and the recorded replies of messages.

    app.py        the Starlette app, its routes and security headers; ``serve``
    auth.py       operators' login, the signed session cookie, CSRF tokens
    pages.py      the pages: overview, dead letters, a dead letter, messages
    actions.py    preview replay, replay, purge: logged and counted per operator
    context.py    what they share: settings, the queue (one operation at a time), rendering
    letters.py    dead letters as the pages show them: filters, pages, selections
    dryrun.py     a replay's preview (DeadLetterQueue.preview) as the page shows it
    history.py    recorded replies looked up (worker/store/history.py)
    sampling.py   the workers' /metrics sampled into rates; their /healthz and /readyz
    templates/    Jinja2 templates and the page's few lines of JavaScript

Server-rendered HTML; the overview refreshes itself with a fragment fetched by plain
JavaScript.  No page shows a secret: no URL with its password, no DSN, no key.
"""
