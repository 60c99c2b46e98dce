"""Sharding: `--shard i/N` splits the (workflow, env) pairs by jump consistent hash.

Every pair runs on exactly one of N collectors; adding the (N+1)-th moves only
the share it must take, all onto it; the shares are even; and the owner of a
pair is the same in every process (no salted hash()).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from collector.config import load_config
from collector.scheduler import Pair, Shard, jump_hash, pair_hash
from tests.helpers import REPO, WORKFLOWS

ENVS = ("prod", "staging", "dev")
# Thousands of pairs with names like real ones: the figures below are fractions of these.
SYNTHETIC: list[Pair] = [(f"workflow-{i}", env) for i in range(4000) for env in ENVS]


def owner(pair: Pair, count: int) -> int:
    """The index of the one shard of `count` that owns `pair`, found through Shard.owns only."""
    (index,) = [i for i in range(count) if Shard(i, count).owns(pair)]
    return index


def owners(pairs: list[Pair], count: int) -> list[int]:
    return [owner(pair, count) for pair in pairs]


@pytest.fixture
def shipped_pairs(offline_environments: None) -> list[Pair]:
    return [(workflow.name, env) for workflow, env in load_config(WORKFLOWS).pairs()]


def test_jump_hash_gives_the_papers_buckets() -> None:
    # Lamping and Veach's C++ as ClickHouse ships it (jumpConsistentHash, test 00580 and its .reference).
    cases = {(1, 1): 0, (42, 57): 43, (256, 1024): 520, (3735883980, 1): 0, (3735883980, 666): 361, (16045690984833335023, 255): 237}
    assert {args: jump_hash(*args) for args in cases} == cases


def test_three_shards_run_every_pair_exactly_once(shipped_pairs: list[Pair]) -> None:
    assert len(shipped_pairs) == 18  # 6 workflows x 3 environments
    for pairs in (shipped_pairs, SYNTHETIC):
        claims = [sum(Shard(i, 3).owns(pair) for i in range(3)) for pair in pairs]
        assert claims == [1] * len(pairs), "a pair is run by no shard or by more than one"
    # One shard is the whole: 0/1 (the default) runs everything.
    assert all(Shard().owns(pair) for pair in shipped_pairs + SYNTHETIC)


@pytest.mark.parametrize("count", range(1, 13))
def test_adding_a_shard_moves_only_its_share_and_only_onto_it(count: int) -> None:
    before, after = owners(SYNTHETIC, count), owners(SYNTHETIC, count + 1)
    moved = [(old, new) for old, new in zip(before, after) if old != new]
    assert {new for _, new in moved} == {count}, "a pair moved between shards that were already there"
    # As few as a consistent hash allows: the new shard's fair share, 1/(N+1) (modulo N moves N/(N+1)).
    fraction = len(moved) / len(SYNTHETIC)
    assert 0.7 / (count + 1) <= fraction <= 1.3 / (count + 1), f"{fraction:.4f} of the pairs moved going {count} -> {count + 1}"


@pytest.mark.parametrize("count", [2, 3, 5, 8, 16])
def test_shares_are_even(count: int) -> None:
    sizes = Counter(owners(SYNTHETIC, count))
    fair = len(SYNTHETIC) / count
    assert sorted(sizes) == list(range(count))
    assert all(0.85 * fair <= size <= 1.15 * fair for size in sizes.values()), (fair, sorted(sizes.values()))


def test_a_pair_has_the_same_owner_in_every_process() -> None:
    # Another interpreter with another hash() seed must agree, or two collectors would split the pairs differently.
    sample = SYNTHETIC[:300]
    code = (
        "import json, sys\nfrom collector.scheduler import jump_hash, pair_hash\n"
        "print(json.dumps([jump_hash(pair_hash(tuple(p)), 7) for p in json.load(sys.stdin)]))"
    )
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], input=json.dumps(sample), capture_output=True, text=True,
                              env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=REPO, timeout=60, check=True)
        assert json.loads(done.stdout) == [jump_hash(pair_hash(pair), 7) for pair in sample] == owners(sample, 7)
    assert len({pair_hash(pair) for pair in SYNTHETIC}) == len(SYNTHETIC), "64-bit keys: no two pairs share one"
