"""The connection budget: workers x (pool_size + max_overflow) + 1 probe against max_connections."""

from __future__ import annotations

from launcher.supervisor.connections import connection_warning, needed


def test_the_defaults_need_fifteen_connections_a_worker_and_one_probe() -> None:
    assert needed(4, {}) == 4 * 15 + 1


def test_pools_that_fit_give_no_warning() -> None:
    assert connection_warning(10, {}, 151) is None


def test_pools_that_do_not_fit_give_one_line_with_the_formula_and_the_fix() -> None:
    line = connection_warning(4, {"API_DB_POOL_SIZE": "20", "API_DB_MAX_OVERFLOW": "20"}, 151)
    assert line is not None and "\n" not in line
    assert "= 161 connections, more than the server's max_connections=151" in line
    assert "lower the pool sizes or server.workers" in line


def test_unreadable_pool_sizes_count_as_the_defaults() -> None:
    assert needed(1, {"API_DB_POOL_SIZE": "many", "API_DB_MAX_OVERFLOW": "-3"}) == 5 + 0 + 1
