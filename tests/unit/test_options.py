"""The options table drives the command line, ServerConfig's defaults and checks, the -o
sub-options and `stats settings`: each derived view must agree with the table."""

from __future__ import annotations

import dataclasses

import click
import pytest

import memcache_server.cli as cli
from memcache_server.config import ConfigError, ServerConfig, parse_extended
from memcache_server.options import DEFAULTS, EXTENDED, OPTIONS, settings_values
from memcache_server.report import SETTINGS_ORDER


def test_every_option_sets_a_config_field_with_the_tables_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(ServerConfig)}
    for option in OPTIONS:
        if option.name:
            assert option.name in fields, option.name
    config = ServerConfig()
    for name, default in DEFAULTS.items():
        assert getattr(config, name) == default, name


def test_every_flag_is_a_click_option_of_the_node_command() -> None:
    spelled = {flag for p in cli.main.params if isinstance(p, click.Option) for flag in p.opts}
    for option in OPTIONS:
        for flag in option.flags:
            assert flag in spelled, flag


def test_stats_settings_show_the_tables_lines_as_the_config_holds_them() -> None:
    shown = settings_values(ServerConfig(max_connections=10, threads=2, use_cas=False))
    assert shown["maxconns"] == 10
    assert shown["num_threads"] == 2  # num_threads_per_udp also reads -l: report.py shows it
    assert shown["cas_enabled"] is False
    assert set(shown) <= set(SETTINGS_ORDER)


def test_sub_options_are_parsed_and_applied_as_the_table_says() -> None:
    ext = parse_extended(["idle_timeout=5,no_lru_crawler", "read_buf_mem_limit=2,slab_automove"])
    config = ServerConfig(extended=ext).with_extended()
    assert (config.idle_timeout, config.lru_crawler) == (5, False)
    assert (config.read_buf_mem_limit, config.slab_automove) == (2 * 1024 * 1024, 1)
    assert set(ext) <= set(EXTENDED)
    with pytest.raises(ConfigError, match='Illegal suboption "bogus"'):
        parse_extended(["bogus"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"threads": 0}, "Number of threads must be greater than 0"),
        ({"protocol": "binary"}, "binary protocol is not supported"),
        ({"slab_automove": 3}, "slab_automove must be between 0 and 2"),
        ({"cluster_token": "a b"}, "--cluster-token must be 1-250 printable ASCII"),
    ],
)
def test_each_check_comes_from_the_table(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**settings).validate()  # type: ignore[arg-type]
