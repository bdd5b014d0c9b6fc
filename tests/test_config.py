import pytest

from proxylm.config import CONFIG_DIR, ConfigError, load_config, save_config


def test_shipped_configs_load():
    names = [p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_")]
    for family in ("bytes", "tokens", "proxy-bpe", "proxy-gzip", "proxy-bpe-bytes"):
        assert f"{family}-tiny" in names and f"{family}-gpu" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_paper_recipe():
    cfg = load_config("proxy-bpe-tiny")
    assert cfg.views.rate == 0.9 and cfg.views.mode == "sentinel"
    s = cfg.views.schedule
    assert s.enabled and s.warmup_frac == 0.2 and s.initial_rate == 0.4 and s.warmup_mode == "translation_random"


def test_overrides_and_types():
    cfg = load_config("bytes-tiny", ["train.max_steps=20", "model.dim=128", "train.lr=1e-3", "views.codec=gzip"])
    assert cfg.train.max_steps == 20 and cfg.model.dim == 128 and cfg.train.lr == 1e-3
    assert cfg.views.codec == "gzip"


@pytest.mark.parametrize("override, message", [
    ("train.maxsteps=3", "valid keys of train"),
    ("nosuchsection.x=1", "unknown config key"),
    ("train.max_steps=abc", "expected int"),
    ("views.mode=bogus", "unknown mixing mode"),
    ("model.dim", "must look like"),
])
def test_bad_keys_are_rejected_with_the_valid_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("bytes-tiny", [override])


def test_unknown_config_name_lists_shipped():
    with pytest.raises(ConfigError, match="proxy-bpe-tiny"):
        load_config("no-such-config")


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config("proxy-bpe-tiny", ["train.max_steps=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(str(tmp_path / "c.yaml")) == cfg


def test_codec_options_sections_and_moved_keys(tmp_path):
    cfg = load_config("proxy-bpe-micro", ["views.codec_options.bpe.vocab_size=512"])
    assert cfg.views.codec_options.for_codec("bpe") == {"vocab_size": 512}
    neural = load_config("proxy-neural-micro", ["views.codec_options.neural.window_bits=12",
                                                "views.codec_options.neural.m1.steps=7"])
    assert neural.views.codec_options.for_codec("neural") == {"window_bits": 12, "steps": 7, "dim": 48, "n_layers": 2,
                                                              "n_heads": 2}  # the micro config's small M1
    with pytest.raises(ConfigError, match=r"views.codec_options.bpe.*vocab_size must be >= 256"):
        load_config("proxy-bpe-micro", ["views.codec_options.bpe.vocab_size=100"])
    with pytest.raises(ConfigError, match="views.codec_options.neural.m1"):
        load_config("proxy-neural-micro", ["views.codec_options.neural.m1.stepz=7"])
    # an old config keeps working, and the warning names the new keys
    old = tmp_path / "old.yaml"
    old.write_text("base: proxy-bpe-bytes-micro\nviews: {bpe_vocab_size: 300, gray_code: true, gzip_level: 4}\n")
    with pytest.warns(DeprecationWarning, match="views.codec_options.bpe_bytes.gray"):
        migrated = load_config(str(old))
    o = migrated.views.codec_options
    assert (o.bpe.vocab_size, o.bpe_bytes.vocab_size, o.bpe_bytes.gray, o.gzip.level) == (300, 300, True, 4)


def test_mix_modes_table():
    from proxylm.data.modes import MIX_MODES, MODES

    assert MIX_MODES == tuple(MODES) and {m.paired for m in MODES.values()} == {True, False}
    with pytest.raises(ConfigError, match="views.schedule.warmup_mode: unknown mixing mode 'translate'"):
        load_config("proxy-bpe-micro", ["views.schedule.warmup_mode=translate"])
