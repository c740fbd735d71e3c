"""How a `python -m tafs` stage fails: one last `error:` line always; a traceback only where the error may be a bug."""

import pytest

from tafs.cli import _one_line_errors
from tafs.config import ConfigError


def _raise(exc):
    def fn():
        raise exc
    return fn


def test_config_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        _one_line_errors(_raise(ConfigError("train.lr: must be > 0")), verbose=False)
    assert str(e.value.code) == "error: train.lr: must be > 0"
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("exc", [ValueError("bad shape"), KeyError("missing"), FileNotFoundError("no such file")])
def test_other_errors_keep_their_traceback(capsys, exc):
    with pytest.raises(SystemExit) as e:
        _one_line_errors(_raise(exc), verbose=False)
    assert str(e.value.code).startswith("error: ")
    err = capsys.readouterr().err
    assert "Traceback" in err and type(exc).__name__ in err and "raise exc" in err  # where it came from


def test_verbose_reraises():
    with pytest.raises(ValueError):
        _one_line_errors(_raise(ValueError("x")), verbose=True)
