"""rlhf.tracking: wandb goes offline only without credentials (found wandb's way), and the key is never written."""

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb

import rlhf.tracking as tracking
from rlhf.tracking import REDACTED, Tracker, redact_secrets, wandb_credentials, wandb_mode_override

API_KEY = "k" * 40  # the format wandb accepts; never sent anywhere (wandb.init is faked where a key is set)
OFFLINE_NOTICE = "wandb: no credentials"


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME and working directory with no wandb credentials or settings; wandb's cached settings reloaded."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setattr(tracking, "_has_said_offline", False)
    wandb.teardown()  # wandb caches settings (mode, host) per process: read them again from this environment
    yield home
    wandb.teardown()


def _write_netrc(home: Path, key: str) -> None:
    # What `wandb login` writes (for the default host, wandb reads the api.wandb.ai entry).
    netrc = home / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {key}\n")
    netrc.chmod(0o600)


class FakeInit:
    """Records wandb.init's arguments instead of starting a run (a run with credentials would go online)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.logged = None

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        mode = kwargs["mode"] or "online"
        return SimpleNamespace(
            id=kwargs["id"], dir=kwargs["dir"], settings=SimpleNamespace(mode=mode), log=self.log, finish=lambda: None
        )

    def log(self, metrics, step):
        self.logged = (metrics, step)


def test_netrc_login_is_not_forced_offline(wandb_home):
    assert wandb_credentials() is None
    assert wandb_mode_override() == "offline"
    _write_netrc(wandb_home, API_KEY)
    credentials = wandb_credentials()
    assert isinstance(credentials, wandb.sdk.lib.wbauth.AuthApiKey) and credentials.api_key == API_KEY
    assert wandb_mode_override() is None  # wandb decides, and it has the key


def test_env_key_and_chosen_modes_are_left_to_wandb(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    assert wandb_mode_override() is None
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "online")  # chosen without credentials: wandb's own error is the right one
    assert wandb_mode_override() is None


def test_malformed_key_is_a_clear_error_without_the_key(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "short-secret")
    with pytest.raises(ValueError, match="wandb credentials are malformed") as info:
        wandb_mode_override()
    assert "short-secret" not in str(info.value) and "secret" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_without_credentials_the_run_is_offline_and_said_once(wandb_home, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rlhf.tracking")
    run_dir = tmp_path / "run"
    tracker = Tracker(["wandb"], "proj", "exp", run_dir, {"a": 1})  # the real wandb, offline: no network
    try:
        assert tracker.wandb_run.settings.mode == "offline"
        tracker.log({"critic/score/mean": 0.5}, step=1)
    finally:
        tracker.finish()
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert caplog.text.count(OFFLINE_NOTICE) == 1
    assert "wandb run " in caplog.text and "in offline mode" in caplog.text


def test_offline_notice_is_given_once_per_process(wandb_home, tmp_path, monkeypatch, caplog):
    fake_init = FakeInit()
    monkeypatch.setattr(wandb, "init", fake_init)
    for _attempt in range(2):  # e.g. a restart after a worker died builds a second Tracker
        Tracker(["wandb"], "proj", "exp", tmp_path / "run", {"a": 1}).finish()
    assert [call["mode"] for call in fake_init.calls] == ["offline", "offline"]
    assert caplog.text.count(OFFLINE_NOTICE) == 1


@pytest.mark.parametrize("source", ["env", "netrc"])
def test_key_never_reaches_logs_or_wandb_config(wandb_home, tmp_path, monkeypatch, caplog, source):
    caplog.set_level(logging.DEBUG)
    if source == "env":
        monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    else:
        _write_netrc(wandb_home, API_KEY)
    fake_init = FakeInit()
    monkeypatch.setattr(wandb, "init", fake_init)
    config = {"trainer": {"note": f"key={API_KEY}", "seed": 1}, "tags": [API_KEY, "x"], "lr": 1e-6}
    tracker = Tracker(["console", "wandb"], "proj", "exp", tmp_path / "run", config)
    tracker.log({"critic/score/mean": 0.5}, step=1)
    tracker.finish()
    (call,) = fake_init.calls
    assert fake_init.logged == ({"critic/score/mean": 0.5}, 1)
    assert call["mode"] is None  # online is wandb's call: it has credentials
    assert call["config"] == {"trainer": {"note": REDACTED, "seed": 1}, "tags": [REDACTED, "x"], "lr": 1e-6}
    assert API_KEY not in repr(call)
    assert API_KEY not in caplog.text and OFFLINE_NOTICE not in caplog.text
    assert config["tags"][0] == API_KEY, "the caller's config is not modified"


def test_redact_secrets_leaves_other_values():
    config = {"a": "plain", "b": ("s3cret-x", 2), "c": None}
    assert redact_secrets(config, []) is config
    assert redact_secrets(config, ["s3cret"]) == {"a": "plain", "b": (REDACTED, 2), "c": None}
