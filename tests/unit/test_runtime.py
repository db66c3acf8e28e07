"""Ray environment defaults: applied only for an embedded Ray, never over the user's settings."""

from __future__ import annotations

from raylurm.runtime import apply_local_ray_env, cluster_address, local_ray_env


def test_defaults_fill_only_unset_variables(tmp_path):
    env = {"RAY_TMPDIR": str(tmp_path / "mine"), "HTTP_PROXY": "http://corp:3128"}
    applied = apply_local_ray_env(env)
    assert env["RAY_TMPDIR"] == str(tmp_path / "mine") and env["HTTP_PROXY"] == "http://corp:3128"
    assert "RAY_TMPDIR" not in applied and "HTTP_PROXY" not in applied
    assert env["RAY_AUTH_MODE"] == "disabled" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["NO_PROXY"] == "127.0.0.1,localhost,::1"
    assert (tmp_path / "mine").is_dir()


def test_proxy_points_at_loopback():
    env = local_ray_env()
    assert all(env[k].startswith("http://127.0.0.1:") for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))
    assert len(env["RAY_TMPDIR"]) < 60, "Unix socket paths under RAY_TMPDIR must stay short"


def test_cluster_address_precedence(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert cluster_address(None) == "ray://head:10001"
    assert cluster_address("10.0.0.1:6379") == "10.0.0.1:6379"
