"""``eval.rerank.k`` needs a fusion encoder: without one it is refused in one line that names
the fix, in training and in evaluation (not evaluated silently without re-ranking)."""

import pytest

from tests.conftest import compose_config
from vlr.errors import ConfigError
from vlr.runs.options import check_options


@pytest.mark.parametrize("entry", ["train", "eval"])
def test_rerank_without_fusion_is_one_line_naming_the_fix(entry, tmp_path):
    cfg = compose_config("eval.rerank.k=8", name=entry, run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^eval.rerank.k=8 re-ranks .* train with fusion=default") as err:
        check_options(cfg)
    assert "\n" not in str(err.value)
    check_options(compose_config("eval.rerank.k=8", "fusion=default", name=entry, run_dir=tmp_path / "ok"))
