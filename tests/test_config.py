"""Config errors name the file, key and value, before any work starts."""
import os

import pytest

from common.config import ConfigError, load_config, save_config


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_load_and_are_frozen():
    cfg = load_config(None)
    assert cfg.MODEL.FAMILY == "cream"
    with pytest.raises(Exception):
        cfg.SEED = 3


def test_yaml_overrides_and_base_chain(tmp_path):
    base = write(tmp_path, "base.yaml", "DATA:\n  BATCH_SIZE: 16\n  IMAGE_SIZE: 64\nOPTIM:\n  LR: 0.5\n")
    child = write(tmp_path, "child.yaml", "_BASE_: base.yaml\nDATA:\n  IMAGE_SIZE: 96\n")
    cfg = load_config(child, ["OPTIM.LR", "0.25", "OPTIM.WEIGHT_DECAY", "1e-5", "AUG.RRC_SCALE", "[0.5, 1.0]"])
    assert cfg.DATA.BATCH_SIZE == 16 and cfg.DATA.IMAGE_SIZE == 96
    assert cfg.OPTIM.LR == 0.25
    assert cfg.OPTIM.WEIGHT_DECAY == 1e-5  # "1e-5" is a string to PyYAML; coerced to the float default type
    assert cfg.AUG.RRC_SCALE == (0.5, 1.0)


def test_unknown_key_names_file_key_and_suggests(tmp_path):
    path = write(tmp_path, "bad.yaml", "DATA:\n  BATCH_SIZ: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert path in msg and "DATA.BATCH_SIZ" in msg and "BATCH_SIZE" in msg


def test_wrong_type_names_key_value_and_expected_type(tmp_path):
    path = write(tmp_path, "bad.yaml", "DATA:\n  BATCH_SIZE: eight\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert path in msg and "DATA.BATCH_SIZE" in msg and "'eight'" in msg and "int" in msg


def test_bad_enum_value(tmp_path):
    path = write(tmp_path, "bad.yaml", "OPTIM:\n  NAME: lion\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "OPTIM.NAME" in str(err.value) and "'lion'" in str(err.value) and "rmsprop_tf" in str(err.value)


def test_out_of_range_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["DATA.BATCH_SIZE", "0"])
    assert "DATA.BATCH_SIZE" in str(err.value) and ">= 1" in str(err.value)


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(err.value)
    child = write(tmp_path, "child.yaml", "_BASE_: gone.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert "gone.yaml" in str(err.value) and "child.yaml" in str(err.value)


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "_BASE_: b.yaml\n")
    b = write(tmp_path, "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(b)
    assert "cycle" in str(err.value)


def test_override_errors():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.EPOCHS"])
    assert "KEY VALUE" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.EPOCH", "3"])
    assert "TRAIN.EPOCH" in str(err.value) and "command line" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN", "3"])
    assert "section" in str(err.value)


def test_section_replaced_by_scalar(tmp_path):
    path = write(tmp_path, "bad.yaml", "DATA: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "DATA" in str(err.value) and "section" in str(err.value)


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    assert "mapping" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "broken.yaml", "DATA: [1, 2\n"))
    assert "not valid YAML" in str(err.value)


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["OPTIM.LR", "0.3", "AUG.RAND_AUGMENT", "rand-m9-mstd0.5"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, str(out))
    again = load_config(str(out))
    assert again == cfg
    assert [p for p in os.listdir(out.parent) if p.endswith(".tmp")] == []
