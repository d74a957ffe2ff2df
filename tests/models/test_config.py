"""Configuration: loading, validation messages, the shipped config.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from models import config as config_module
from models.config import Config, ConfigError
from models.stores import open_store

REPO_CONFIG = Path(__file__).parents[2] / "config.toml"


def test_repo_config_toml_holds_exactly_the_defaults() -> None:
    with open(REPO_CONFIG, "rb") as handle:
        data = tomllib.load(handle)
    loaded = config_module.parse(data, base_dir=REPO_CONFIG.parent)
    assert loaded == Config()
    # Every key of every section is written out, so the file documents all of them.
    assert config_module.as_dict(loaded).keys() == data.keys()
    for section, values in config_module.as_dict(loaded).items():
        assert set(data[section]) == set(values), section


def test_every_key_in_config_toml_has_a_comment() -> None:
    lines = REPO_CONFIG.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert lines[number - 1].lstrip().startswith("#") or lines[number - 2].lstrip().startswith("#"), line


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[watch]\nmodez = 'auto'\n", "watch.modez: unknown key"),
        ("[watchh]\nmode = 'auto'\n", "watchh: unknown section"),
        ("[watch]\nmode = 'sometimes'\n", "watch.mode: must be one of auto, inotify, polling"),
        ("[watch]\nsettle_ms = 'soon'\n", "watch.settle_ms: expected a whole number"),
        ("[watch]\nrecursive = 1\n", "watch.recursive: expected true or false"),
        ("[watch]\nignore = '*.tmp'\n", "watch.ignore: expected a list of strings"),
        ("[pipeline]\nworkers = -1\n", "pipeline.workers: must be at least 0"),
        ("[thumbnails]\nsmall = 400\n", "thumbnails.small: must not be larger than thumbnails.medium"),
        ("[caption]\ndevice = 'tpu'\n", "caption.device: must be auto, cpu, cuda or cuda:N"),
        ("[api]\nport = 70000\n", "api.port: must be at most 65535"),
        ("[api]\nregister_timeout_s = true\n", "api.register_timeout_s: expected a number"),
        ("[database]\nurl = 'mysql://htx@db/htx'\n", "database.url: expected sqlite:///PATH or postgresql+psycopg://"),
        ("[database]\nurl = 'data/htx.db'\n", "database.url: expected sqlite:///PATH"),
    ],
)
def test_wrong_keys_and_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "htx.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        config_module.load(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[storage]\nbackend = "nfs"\n', "storage.backend: must be one of folder, s3"),
        ('[storage]\nbackend = "s3"\n', "storage.s3.bucket: the bucket to keep the images in"),
        ('[storage.s3]\nbuckets = "x"\n', "storage.s3.buckets: unknown key"),
        ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\nendpoint = "http://minio:9000"\n', "storage.s3.allow_http: must be true"),
        ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\nendpoint = "minio:9000"\n', "storage.s3.endpoint: expected http://HOST:PORT"),
        ('[storage.s3]\npresign_s = -1\n', "storage.s3.presign_s: must be at least 0"),
    ],
)
def test_wrong_storage_settings_name_the_key(tmp_path: Path, toml: str, message: str, monkeypatch) -> None:
    for _key, variables in config_module.S3_CREDENTIAL_ENVS:
        for variable in variables:
            monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "htx.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_module.load(path)


def test_the_object_stores_credentials_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "htx.toml"
    path.write_text('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "photos"\n')
    monkeypatch.delenv("HTX_S3_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("HTX_S3_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-aws")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    assert config_module.load(path).storage.s3.access_key_id == "from-aws"
    monkeypatch.setenv("HTX_S3_ACCESS_KEY_ID", "from-htx")  # HTX's own wins over AWS's
    monkeypatch.setenv("HTX_S3_SECRET_ACCESS_KEY", "htx-secret")
    loaded = config_module.load(path)
    assert (loaded.storage.s3.access_key_id, loaded.storage.s3.secret_access_key) == ("from-htx", "htx-secret")
    assert loaded.storage.backend == "s3" and loaded.storage.s3.bucket == "photos"


def test_not_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "htx.toml"
    path.write_text("[watch\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_module.load(path)


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "htx.toml").write_text('[paths]\ndata_dir = "state"\ninbox = "../drop"\n')
    monkeypatch.chdir(tmp_path)
    loaded = config_module.load(folder / "htx.toml")
    assert loaded.data_dir == folder / "state"
    assert loaded.inbox_dir == tmp_path / "drop"
    assert open_store(loaded).local_path("thumbnails/ab/x.jpg") == folder / "state" / "thumbnails" / "ab" / "x.jpg"
    assert loaded.database_url == f"sqlite:///{folder / 'state' / 'htx.db'}"


def test_config_file_is_found_through_the_environment(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "from-env.toml").write_text("[pipeline]\nworkers = 3\n")
    monkeypatch.setenv(config_module.CONFIG_ENV, str(tmp_path / "from-env.toml"))
    monkeypatch.chdir(tmp_path)
    assert config_module.load().pipeline.workers == 3
    # --config wins over the environment.
    (tmp_path / "explicit.toml").write_text("[pipeline]\nworkers = 5\n")
    assert config_module.load(tmp_path / "explicit.toml").pipeline.workers == 5


def test_without_any_file_the_defaults_apply_relative_to_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(config_module.CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    loaded = config_module.load()
    assert loaded.source is None
    assert loaded.inbox_dir == tmp_path / "data" / "inbox"


def test_config_is_immutable(config: Config) -> None:
    with pytest.raises(AttributeError):
        config.watch.mode = "polling"  # type: ignore[misc]


def test_captions_come_from_blip_base_by_default() -> None:
    assert Config().caption.model == "Salesforce/blip-image-captioning-base"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_int8_needs_float32_weights(dtype: str) -> None:
    with pytest.raises(ConfigError, match="caption.quantize"):
        config_module.parse({"caption": {"quantize": "int8", "dtype": dtype}}, base_dir=REPO_CONFIG.parent)


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"device": "cuda"}, "set caption.device to auto or cpu"),
        ({"quantize": "int8", "dtype": "float32"}, "set caption.quantize to none"),
        ({"num_beams": 3}, "set caption.num_beams to 1"),
    ],
)
def test_the_openvino_runtime_refuses_what_only_torch_does(settings: dict[str, object], fix: str) -> None:
    with pytest.raises(ConfigError, match=f"caption.runtime: .*{fix}"):
        config_module.parse({"caption": {"runtime": "openvino", **settings}}, base_dir=REPO_CONFIG.parent)
    # auto picks torch for them instead
    assert config_module.parse({"caption": {"runtime": "auto", **settings}}, base_dir=REPO_CONFIG.parent).caption.runtime == "auto"


def test_the_caption_runtime_is_one_of_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="caption.runtime"):
        config_module.parse({"caption": {"runtime": "onnx"}}, base_dir=REPO_CONFIG.parent)


def test_the_database_url_may_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    config_file = tmp_path / "htx.toml"
    config_file.write_text('[database]\nurl = "sqlite:////srv/htx.db"\n')
    assert config_module.load(config_file).database_url == "sqlite:////srv/htx.db"
    secret = "postgresql+psycopg://htx:s3cret@db.example.org/htx"
    monkeypatch.setenv(config_module.DATABASE_URL_ENV, secret)
    assert config_module.load(config_file).database_url == secret
    config_file.write_text("")
    assert config_module.load(config_file).database_url == secret


def test_check_config_never_prints_the_database_password(tmp_path: Path, monkeypatch, capsys) -> None:
    from daemon.cli import main

    monkeypatch.setenv(config_module.DATABASE_URL_ENV, "postgresql+psycopg://htx:s3cret@db.example.org/htx")
    assert main(["--config", str(tmp_path / "none.toml"), "check-config"]) == 2  # no such file
    (tmp_path / "htx.toml").write_text('[caption]\nmodel = "none"\n')
    assert main(["--config", str(tmp_path / "htx.toml"), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and 'url = "postgresql+psycopg://htx:***@db.example.org/htx"' in out


@pytest.mark.parametrize(("key", "variable"), [("read_token", "HTX_READ_TOKEN"), ("upload_token", "HTX_UPLOAD_TOKEN")])
def test_a_token_shorter_than_16_characters_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch, capsys, key: str, variable: str
) -> None:
    from daemon.cli import main

    with pytest.raises(ConfigError, match=rf"api\.{key} \(or \${variable}\): must be at least 16 characters, got 15"):
        config_module.parse({"api": {key: "x" * 15}}, base_dir=tmp_path)
    assert config_module.parse({"api": {key: "x" * 16}}, base_dir=tmp_path).api == config_module.ApiConfig(**{key: "x" * 16})

    # From the environment too, and check-config says so in one line without the token.
    (tmp_path / "htx.toml").write_text("")
    monkeypatch.setenv(variable, "hunter2")
    assert main(["--config", str(tmp_path / "htx.toml"), "check-config"]) == 2
    captured = capsys.readouterr()
    assert f"api.{key} (or ${variable}): must be at least 16 characters, got 7" in captured.err
    assert "hunter2" not in captured.out + captured.err and "Traceback" not in captured.err
