"""Every setting a service reads is a field of a settings model, and the README lists it."""

import re
from pathlib import Path

import pytest

from neurocyte_aggregator.handlers import AggregatorSettings
from neurocyte_chunker.handlers import ChunkerSettings
from neurocyte_detector.handlers import DetectorSettings
from neurocyte_ingest.handlers import IngestSettings
from neurocyte_notifier.handlers import NotifierSettings
from neurocyte_shared.messaging.config import ConfigurationError, Settings
from neurocyte_web.settings import WebSettings

MODELS = (Settings, IngestSettings, ChunkerSettings, DetectorSettings, AggregatorSettings, NotifierSettings,
          WebSettings)
REPO = Path(__file__).resolve().parents[2]


def test_the_readme_lists_every_setting_the_services_read():
    readme = (REPO / "README.md").read_text()
    for model in MODELS:
        for name in model.variables():
            assert f"`{name}`" in readme, f"README.md does not list {name} ({model.__name__})"


def test_no_service_reads_a_variable_outside_its_settings_model():
    known = {name for model in MODELS for name in model.variables()}
    for path in (REPO / "services").rglob("*.py"):
        read = set(re.findall(r"environ(?:\.get)?[\[(]\s*\"(NEUROCYTE_[A-Z0-9_]+)\"", path.read_text()))
        assert read <= known, f"{path} reads {read - known} outside a settings model"


def test_a_missing_or_bad_setting_is_a_sentence_not_a_traceback():
    with pytest.raises(ConfigurationError, match="NEUROCYTE_QUEUE_URL is not set"):
        Settings.from_env({})
    with pytest.raises(ConfigurationError, match="NEUROCYTE_LINK_EXPIRY_S"):
        AggregatorSettings.from_env({"NEUROCYTE_LINK_EXPIRY_S": "10"})
    with pytest.raises(ConfigurationError, match="NEUROCYTE_DETECTION_PARAMS"):
        DetectorSettings.from_env({"NEUROCYTE_DETECTION_PARAMS": "{not json"})
    assert DetectorSettings.from_env({"NEUROCYTE_DETECTION_PARAMS": '{"threshold_mad": 6}'}).detection_params == {
        "threshold_mad": 6}
    assert DetectorSettings.from_env({}).detection_params == {}
    assert AggregatorSettings.from_env({}).metrics_params == {}
    assert NotifierSettings.from_env({"NEUROCYTE_TOPIC_ARN": "arn", "NEUROCYTE_SNS_DELIVERS_UNCONFIRMED": "1"}
                                     ).delivers_unconfirmed
