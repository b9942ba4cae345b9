"""Issue 3, item 4: an item error the validation could not foresee fails that item alone,
at close to bulk cost (about k*log2(n) extra statements for k bad items among n)."""

from __future__ import annotations

import math
import random

import asyncpg
import orjson
import pytest

from tests.support import samples
from tests.support.producer import Producer
from tests.support.reliability_support import CountingConnection, prepare
from worker.service import Worker
from worker.store.writer import commit_batch

# The database refuses what validation accepts: a CHECK constraint on one column, and a
# trigger that deletes the parent 'RACE' while the row referring to it is inserted (a
# parent deleted between the parent check and the insert).
REFUSING_SQL = """
INSERT INTO vbapi.benefit_category VALUES ('MED'), ('RACE');
ALTER TABLE vbapi.benefit ADD CONSTRAINT no_bad_hipaa CHECK (hipaa_code <> 'BAD');
CREATE FUNCTION vbapi.delete_race_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.benefit_category = 'RACE' THEN
        DELETE FROM vbapi.benefit_category WHERE benefit_category = 'RACE';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER delete_race_parent BEFORE INSERT ON vbapi.benefit
    FOR EACH ROW EXECUTE FUNCTION vbapi.delete_race_parent();
"""


def items_with_bad(n: int, bad: set[int], race: int | None = None) -> list[dict[str, object]]:
    items = []
    for i in range(n):
        fields: dict[str, object] = {"benefit_Category": "MED", "hipaA_Code": "OK"}
        if i in bad:
            fields["hipaA_Code"] = "BAD"
        if i == race:
            fields["benefit_Category"] = "RACE"
        items.append(samples.benefit(f"B{i:05d}", **fields))
    return items


async def test_only_the_offending_items_fail_and_the_rest_commit(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    await db.execute(REFUSING_SQL)
    rng = random.Random(7)
    n = 1000
    bad = set(rng.sample(range(n), 5))
    race = rng.choice([i for i in range(n) if i not in bad])
    reply = await producer.call(samples.BENEFIT_PATH, items_with_bad(n, bad, race))

    assert reply.status == 207
    data = reply.body["data"]
    assert len(data) == n
    for i, answer in enumerate(data):
        assert answer["id"] == [{"key": "benefit_Code", "value": f"B{i:05d}"}]
        if i in bad:
            assert answer["status"] == 400
            # the JSON name of the column the CHECK reads, and the database's reason
            assert answer["body"].startswith("hipaA_Code: ")
            assert 'violates check constraint "no_bad_hipaa"' in answer["body"]
        elif i == race:
            assert answer["status"] == 404
            assert answer["body"].startswith("parent record not found: ")
            assert "(benefit_category)=(RACE)" in answer["body"]
        else:
            assert (answer["status"], answer["body"]) == (201, "Created")
    stored = {r[0] for r in await db.fetch("SELECT benefit_code FROM vbapi.benefit")}
    assert stored == {f"B{i:05d}" for i in range(n) if i not in bad and i != race}
    # The trigger's deletions went with their savepoints: the parent is still there.
    assert await db.fetchval(
        "SELECT count(*) FROM vbapi.benefit_category WHERE benefit_category = 'RACE'") == 1


@pytest.mark.parametrize("k", [0, 1, 4, 16])
async def test_isolation_costs_about_k_log2_n_statements(dsn: str, db: asyncpg.Connection,
                                                         k: int) -> None:
    """Counted on the wire: every statement the store sends goes through CountingConnection."""
    await db.execute(REFUSING_SQL)
    n = 1024
    bad = set(random.Random(k).sample(range(n), k))
    batch = prepare(samples.BENEFIT_PATH, items_with_bad(n, bad), message_id=f"cost-{k}")
    conn = await asyncpg.connect(dsn, connection_class=CountingConnection)
    try:
        pool = _OneConnection(conn)
        stored = await commit_batch(pool, batch)  # type: ignore[arg-type]
    finally:
        await conn.close()
    assert not stored.replayed
    statuses = [d["status"] for d in orjson.loads(stored.body)["data"]]
    assert statuses.count(400) == k and statuses.count(201) == n - k

    upserts = [q for q in conn.sent if 'INSERT INTO vbapi."benefit" ' in q]
    savepoints = [q for q in conn.sent if q.startswith("SAVEPOINT")]
    levels = math.ceil(math.log2(n))
    if k == 0:
        # The happy path: one bulk statement, no savepoint at all.
        assert (len(upserts), len(savepoints)) == (1, 0)
        return
    # One failed bulk statement, then the halving: per bad item and level one or two
    # statements (the right half is skipped when the left one went in whole, since it
    # must hold the bad item).  Measured: 17, 55 and 163 extra statements for k = 1, 4,
    # 16 (k*log2(n) = 10, 40, 160), against 1024 for one statement per item.
    extra = len(upserts) - 1
    assert extra <= 2 * k * levels, extra
    assert extra < n / 4
    assert len(savepoints) == extra


class _OneConnection:
    """Just enough of a pool to hand commit_batch one connection we can watch."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    def acquire(self) -> _OneConnection:
        return self

    async def __aenter__(self) -> asyncpg.Connection:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_items_of_one_key_are_applied_one_by_one_when_one_is_refused(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    """Issue 18, item 4: a refused item never changes the outcome of another item, even
    one with the same key.  Merged into one row, the key's items all shared the merged
    row's fate: refused together, or 'Created' for values a later item replaced."""
    await db.execute(REFUSING_SQL)
    first_ok = samples.benefit("K1", benefit_Category="MED", hipaA_Code="OK",
                               benefit_Description="first")
    refused = samples.benefit("K1", benefit_Category="MED", hipaA_Code="BAD",
                              benefit_Description="refused")
    last_ok = samples.benefit("K1", benefit_Category="MED", hipaA_Code="OK",
                              benefit_Description="last")
    # A refused item first: the next one of its key is then a create, as if it was alone.
    refused_first = samples.benefit("K2", benefit_Category="MED", hipaA_Code="BAD")
    then_ok = samples.benefit("K2", benefit_Category="MED", hipaA_Code="OK",
                              benefit_Description="kept")
    reply = await producer.call(samples.BENEFIT_PATH,
                                [first_ok, refused, refused_first, last_ok, then_ok])

    statuses = [item["status"] for item in reply.body["data"]]
    assert statuses == [201, 400, 400, 200, 201], reply.body
    assert reply.body["data"][1]["body"].startswith("hipaA_Code: ")
    stored = dict(await db.fetch(
        "SELECT benefit_code, benefit_description FROM vbapi.benefit ORDER BY 1"))
    assert stored == {"K1": "last", "K2": "kept"}


async def test_a_later_item_of_a_key_never_hides_an_earlier_refused_one(
        worker: Worker, producer: Producer, db: asyncpg.Connection) -> None:
    """The merged row was the last item's values, which the database took: the refused
    first item was answered 'Created' although its values were never stored."""
    await db.execute(REFUSING_SQL)
    reply = await producer.call(samples.BENEFIT_PATH, [
        samples.benefit("K3", benefit_Category="MED", hipaA_Code="BAD"),
        samples.benefit("K3", benefit_Category="MED", hipaA_Code="OK")])
    assert [item["status"] for item in reply.body["data"]] == [400, 201], reply.body
    assert await db.fetchval("SELECT hipaa_code FROM vbapi.benefit") == "OK"
