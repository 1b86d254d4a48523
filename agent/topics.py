"""The MQTT topic tree of one unit (docs/mqtt.md is the contract this mirrors)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    root: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.root}/{self.device}"

    @property
    def status(self) -> str:
        """Retained ``online`` / ``offline`` (also the Last Will)."""
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def image(self, event_id: str) -> str:
        return f"{self.base}/images/{event_id}"

    def crop(self, event_id: str) -> str:
        """Under the event's image topic, so ``images/#`` (ACLs, bridges) covers both."""
        return f"{self.base}/images/{event_id}/crop"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def config_desired(self) -> str:
        return f"{self.base}/config/desired"

    @property
    def fleet_config_desired(self) -> str:
        return f"{self.root}/fleet/config/desired"

    @property
    def config_reported(self) -> str:
        return f"{self.base}/config/reported"

    @property
    def model_progress(self) -> str:
        """Each step of a model update (retained: the latest)."""
        return f"{self.base}/model/progress"

    @property
    def commands(self) -> str:
        """The subscription for every command (not their results, a level deeper)."""
        return f"{self.base}/cmd/+"

    def snapshot(self, snapshot_id: str) -> str:
        """A redacted picture the office asked for (the ``snapshot`` command)."""
        return f"{self.base}/snapshots/{snapshot_id}"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def cmd_result(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/result"
