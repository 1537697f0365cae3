"""Rows the store reads back: NUL in model outputs on both databases, and rows damaged outside
evalpipe named instead of misread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_store import make_run, make_sample

from evalpipe.errors import StoreError
from evalpipe.store import Store, open_store, schema


@pytest.fixture(params=["sqlite", "pg"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = request.getfixturevalue("pg_database") if request.param == "pg" else tmp_path / "s.db"
    with open_store(url) as s:
        yield s


def test_a_nul_in_a_model_output_is_stored_the_same_on_both_stores(store: Store) -> None:
    store.create_run(make_run("r"))
    store.put_sample(make_sample("r", "1", output="4\x00 2", error=None))
    (got,) = store.samples("r")
    assert got.output == "4\ufffd 2"


def _damage(store: Store, column: str, text: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            schema.samples.update().where(schema.samples.c.item_id == "1").values(**{column: text})
        )


@pytest.mark.parametrize("text", ['{}, {"strict": "999"}', "{", "[1]"])
def test_a_damaged_sample_row_is_named_never_shifted_into_its_neighbours(
    store: Store, text: str
) -> None:
    store.create_run(make_run("r"))
    store.put_samples([make_sample("r", "1"), make_sample("r", "2")])
    _damage(store, "extracted", text)
    with pytest.raises(
        StoreError, match="sample '1' has a 'extracted' column that is not a JSON object"
    ):
        store.samples("r")


def test_a_damaged_run_config_is_named(store: Store) -> None:
    store.create_run(make_run("r"))
    with store.engine.begin() as conn:
        conn.execute(sa.update(schema.runs).values(config="{"))
    with pytest.raises(StoreError, match="run r is damaged in the store"):
        store.get_run("r")
