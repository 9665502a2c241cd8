"""Deployment settings from the environment (prefix ``MONITOR_``) or a ``.env``-style file named by
``MONITOR_SETTINGS_FILE``. Secrets are ``SecretStr``: never printed, never logged."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.privacy import DEV_KEY, Pseudonymizer


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore")

    #: Key of the keyed hash that replaces personal identifiers in every output.
    pii_key: SecretStr = SecretStr(DEV_KEY.decode())
    #: Policy pack name or file.
    policy: str = "ezhou"
    #: Local state (checkpoints, embedded ClickHouse store, outbox).
    data_dir: Path = Path("var")
    #: Logs as JSON lines.
    log_json: bool = False

    def pseudonymizer(self) -> Pseudonymizer:
        return Pseudonymizer(self.pii_key.get_secret_value())
