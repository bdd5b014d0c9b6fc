"""Typed configs: one dataclass per component, loaded from YAML plus `key=value` overrides.

    cfg = load_config("proxy-bpe-tiny", ["train.max_steps=20", "model.dim=128"])
    save_config(cfg, run_dir / "config.yaml")

Merge order: dataclass defaults -> YAML (by shipped name or path) -> dot-list overrides.
Unknown keys fail loudly and list the valid ones. Values in overrides are parsed as YAML scalars, except for
string keys, which take the text as it is (`data.glob=**/*` needs no quoting).
"""

from __future__ import annotations

import dataclasses
import types
import warnings
import typing
from pathlib import Path

import yaml

from proxylm.core.errors import ConfigError  # noqa: F401  (raised here, imported from here by callers)
from proxylm.core.numbers import number_problem
from proxylm.data.config import DataConfig, ScheduleConfig, ViewsConfig  # noqa: F401
from proxylm.model.config import ModelConfig
from proxylm.train.config import EvalConfig, LoggingConfig, TrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclasses.dataclass
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    views: ViewsConfig = dataclasses.field(default_factory=ViewsConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    name: str = "run"


def _coerce(value, tp, where: str):
    """Check/convert a YAML value to the annotated type (int->float allowed, None for Optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (typing.Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{where}={value}: not a finite number") from None
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp in (int, float):   # every numeric key: finite, within 64 bits (ranges are the sections' own checks)
        # seeds are non-negative (numpy refuses negative seeds; torch would wrap them to 64 bits)
        problem = number_problem(value, tp, low=0 if where.rsplit(".", 1)[-1].endswith("seed") else None)
        if problem:
            raise ConfigError(f"{where}={value!r}: {problem}")
    return value


def from_dict(cls, d: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(d) - set(names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in sorted(unknown))}; "
                          f"valid keys{' of ' + where if where else ''}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e)
        # "dim=0: must be >= 1" from a section's own check -> "model.dim=0: must be >= 1"
        head = msg.split("=", 1)[0] if "=" in msg else ""
        if where and head in names:
            raise ConfigError(f"{where}.{msg}") from e
        raise ConfigError(f"{where or cls.__name__}: {msg}") from e


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    d[parts[-1]] = value


def resolve_config_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A YAML path (relative paths against `relative_to`, the folder of the YAML that names it, else the
    working directory) or the name of a shipped config."""
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml"):
        if relative_to is not None and not p.is_absolute():
            p = relative_to / p
        if p.is_file():
            return p
        if relative_to is not None or p.parent != Path("."):
            raise ConfigError(f"config file {p} does not exist")
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"no config '{name_or_path}': not a YAML file and not a shipped config; "
                      f"shipped configs: {', '.join(names)}")


def _field_type(cls, key: str):
    """The annotated type of a dotted key of `cls` (None when the key is unknown: from_dict reports it)."""
    tp = cls
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _is_str_field(tp) -> bool:
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                         and str in typing.get_args(tp) and not dataclasses.is_dataclass(tp))


def parse_overrides(overrides: list[str], cls=None) -> dict:
    """`a.b=value` items -> nested dict. Values are YAML scalars; a string key (per `cls`'s annotations) takes
    the raw text as it is (globs like **/*, paths, names), `null`/`~` for an optional one."""
    cls = cls or RunConfig
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        tp = _field_type(cls, key)
        if _is_str_field(tp):
            value = None if raw.strip() in ("null", "~") and tp is not str else raw
        elif not raw.strip():
            value = ""
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ConfigError(f"override {key}: {raw!r} is not a valid value "
                                  f"({str(e).splitlines()[0]})") from None
        _set_dotted(out, key, value)
    return out


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(name_or_path: str, _seen: tuple = (), _relative_to: Path | None = None) -> dict:
    """A config file as a dict; a top-level `base: NAME` is loaded first and overlaid. A relative `base:`
    path is taken relative to the folder of the YAML that names it (not the working directory)."""
    try:
        path = resolve_config_path(name_or_path, _relative_to)
    except ConfigError as e:
        if _seen:
            raise ConfigError(f"{_seen[-1]}: base: {name_or_path}: {e}") from e
        raise
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: circular `base:` chain")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = d.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a config name or a YAML path, got {base!r}")
    return deep_merge(read_yaml(base, _seen + (path.resolve(),), path.parent), d) if base else d


# keys that moved: old views key -> the codec_options keys that now hold its value
MOVED_VIEWS_KEYS = {
    "bpe_vocab_size": ("bpe.vocab_size", "bpe_bytes.vocab_size"),
    "gray_code": ("bpe_bytes.gray",),
    "gzip_level": ("gzip.level",),
}


def migrate_moved_keys(d: dict, where: str) -> dict:
    """Old configs keep working: a moved key's value goes to its new place, with a warning naming it."""
    views = d.get("views")
    if not isinstance(views, dict) or not set(views) & set(MOVED_VIEWS_KEYS):
        return d
    views = dict(views)
    for old, new_keys in MOVED_VIEWS_KEYS.items():
        if old in views:
            value = views.pop(old)
            warnings.warn(f"{where}: views.{old} is now " + " and ".join(f"views.codec_options.{k}" for k in new_keys)
                          + "; please rename it", DeprecationWarning, stacklevel=3)
            for key in new_keys:
                _set_dotted(views.setdefault("codec_options", {}), key, value)
    return {**d, "views": views}


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None, cls=RunConfig):
    d: dict = {}
    if name_or_path is not None and not str(name_or_path).strip():   # `train ''` would train the built-in defaults
        raise ConfigError("the config name is empty; give a shipped config name (e.g. proxy-bpe-tiny) or a YAML path")
    if name_or_path:
        d = migrate_moved_keys(read_yaml(name_or_path), str(name_or_path))
        d.setdefault("name", resolve_config_path(name_or_path).stem)
    d = deep_merge(d, migrate_moved_keys(parse_overrides(overrides or [], cls), "override"))
    cfg = from_dict(cls, d)
    if isinstance(cfg, RunConfig):
        validate_run(cfg)
    return cfg


def validate_run(cfg: RunConfig) -> None:
    """Checks that span sections (each section checks its own keys when it is built)."""
    d, e = cfg.data, cfg.eval
    # (data.seq_len may exceed model.max_seq_len: RoPE is computed per position, max_seq_len bounds generation)
    if e.stride and e.stride > e.window(d.seq_len):
        raise ConfigError(f"eval.stride={e.stride}: must be <= the eval window ({e.window(d.seq_len)})")
    if cfg.model.compose_embedding and cfg.views.codec != "bpe":
        raise ConfigError(f"model.compose_embedding=true: needs views.codec=bpe (a codec whose symbols stand for bytes "
                          f"one by one), got {cfg.views.codec!r}; set model.compose_embedding=false")
    m = cfg.model
    if cfg.views.codec is None and (m.output_bridge > 0 or m.input_bridge == "shared"):
        raise ConfigError("model.output_bridge > 0 and model.input_bridge=shared need a compressed view "
                          "(views.codec=bpe); a byte model can use model.input_bridge=own")


def save_config(cfg, path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
