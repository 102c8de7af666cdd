"""The stand-in's `process_images` against the real A1111 v1.10.1's: same jobs, same recorder, same trace.

The adapter's tests run it inside `tests/webui_stub`; they mean something only while the stub calls
the script hooks and `p`'s methods in A1111's order, applies and restores `p.override_settings`
as A1111 does, and conditions txt2img's hires pass the same way. Every case of
`support.processing_contract` runs once in A1111's venv (one subprocess for all cases, on the random
checkpoints of the checkout, no extensions, files under a temporary data dir) and once in the
stand-in; the traces must be equal, restricted to the hooks the stand-in implements. Runs when
SD_WEBUI_DIR points at an A1111 checkout with its venv; skipped otherwise. Slow: a few minutes on CPU.
"""

from __future__ import annotations

import ast
import difflib
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import webui_stub  # noqa: F401  (A1111's `modules` in this process: the stand-in)
from support import processing_contract as contract
from support.webui import OFFLINE_ENVIRONMENT, webui_checkout, webui_python

WEBUI = webui_checkout()
REPO = Path(__file__).resolve().parents[2]
needs_a1111 = pytest.mark.skipif(WEBUI is None,
                                 reason="needs a real A1111 v1.10.1 checkout: set SD_WEBUI_DIR")
pytestmark = [pytest.mark.webui]

A1111_FLAGS = ["--skip-torch-cuda-test", "--use-cpu", "all", "--no-half", "--precision", "full",
               "--disable-all-extensions", "--skip-load-model-at-start", "--no-download-sd-model",
               "--no-prompt-history", "--disable-nan-check"]
"""CPU, no extension (a linked depth2img would trace itself), no params.txt; random SD2 weights give NaN
images, which do not matter here."""

RUN_IN_A1111 = """
import importlib.util, os, pickle, sys
from pathlib import Path
contract_file, data_dir, answers_file, *flags = sys.argv[1:]
sys.argv = ["launch.py", *flags, "--data-dir", data_dir, "--models-dir", os.path.join(os.getcwd(), "models")]
from modules import initialize
initialize.imports()
initialize.initialize()
spec = importlib.util.spec_from_file_location("processing_contract", contract_file)
contract = sys.modules["processing_contract"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(contract)
traces = contract.run_cases(list(contract.CASES), Path(data_dir) / "outputs")
Path(answers_file).write_bytes(pickle.dumps(traces))
"""
"""Starts A1111 as webui.py does, without a server or a model; `run_cases` loads the checkpoints."""


def compared_hooks() -> list[str]:
    """The A1111 job hooks the stand-in's `Script` has: only those can be compared."""
    from modules import scripts

    return [name for name in contract.SCRIPT_HOOKS if hasattr(scripts.Script, name)]


def comparable(trace: list[contract.Event]) -> list[contract.Event]:
    """The events of `compared_hooks()`, of `p`'s methods and the state after the job."""
    names = {*compared_hooks(), *contract.P_METHODS, "after the job"}
    return [event for event in trace if event[0] in names]


def adapter_hooks() -> set[str]:
    """The job hooks the Depth2img script overrides (scripts/depth2img.py)."""
    tree = ast.parse((REPO / "scripts" / "depth2img.py").read_text())
    methods = {node.name for cls in tree.body if isinstance(cls, ast.ClassDef)
               for node in cls.body if isinstance(node, ast.FunctionDef)}
    return methods & set(contract.SCRIPT_HOOKS)


@pytest.fixture(scope="module")
def a1111_traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[contract.Event]]:
    data_dir = tmp_path_factory.mktemp("a1111-data")
    answers = data_dir / "traces.pickle"
    command = [str(webui_python(WEBUI)), "-c", RUN_IN_A1111, contract.__file__, str(data_dir), str(answers),
               *A1111_FLAGS]
    run = subprocess.run(command, cwd=WEBUI, capture_output=True, timeout=3600, check=False,
                         env={**os.environ, **OFFLINE_ENVIRONMENT})
    assert run.returncode == 0, (run.stdout + run.stderr).decode(errors="replace")[-5000:]
    return pickle.loads(answers.read_bytes())


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """A fresh stand-in WebUI with the two checkpoints under A1111's names; its outputs folder."""
    from modules import errors, sd_models, shared
    from webui_stub.harness import write_depth_checkpoint, write_plain_checkpoint

    shared.reset()
    sd_models.reset(str(tmp_path / "models"))
    errors.reported.clear()
    write_depth_checkpoint(Path(sd_models.model_path) / contract.DEPTH)
    write_plain_checkpoint(Path(sd_models.model_path) / contract.BASE)
    sd_models.list_models()
    return tmp_path / "outputs"


def assert_the_stand_in_traces_like_a1111(name: str, a1111_trace: list[contract.Event],
                                          outputs: Path) -> None:
    """Run case `name` in the stand-in; its comparable trace must be A1111's (a unified diff if not)."""
    from modules import errors

    expected = comparable(a1111_trace)
    found = comparable(contract.run_case(contract.CASES[name], outputs))
    assert not errors.reported, errors.reported  # a hook the stand-in called with the wrong arguments
    if found != expected:
        diff = difflib.unified_diff([repr(event) for event in expected], [repr(event) for event in found],
                                    "A1111", "stand-in", lineterm="", n=1)
        compared = f"compared: hooks {compared_hooks()}, p's {list(contract.P_METHODS)}"
        pytest.fail(f"the stand-in's trace is not A1111's ({compared}):\n" + "\n".join(diff))


def test_the_hooks_the_adapter_uses_are_compared():
    """A hook the adapter overrides that the stand-in lacks would never run in the adapter's tests."""
    missing = adapter_hooks() - set(compared_hooks())
    assert not missing, f"the stand-in's Script lacks hooks scripts/depth2img.py uses: {sorted(missing)}"
    from lib_depth2img.webui.script_impl import SHADOWED_METHODS

    assert set(SHADOWED_METHODS) <= set(contract.P_METHODS)


@needs_a1111
@pytest.mark.parametrize("name", list(contract.ORDER_CASES))
def test_process_images_calls_hooks_and_p_in_a1111s_order(a1111_traces, stand_in, name):
    """Batched img2img and txt2img with hires fix: which hook and `p` method runs when, with what.
    Not compared (the stand-in has no such hook): whatever A1111 calls beyond `compared_hooks()`."""
    trace = comparable(a1111_traces[name])
    assert [event for event, _ in trace][:4] == ["setup", "before_process", "process", "init"]
    assert_the_stand_in_traces_like_a1111(name, a1111_traces[name], stand_in)


@needs_a1111
@pytest.mark.parametrize("name", list(contract.OVERRIDE_CASES))
def test_override_settings_apply_for_the_job_and_restore_like_a1111(a1111_traces, stand_in, name):
    """The adapter swaps the depth checkpoint in through `p.override_settings`: the values seen
    from `before_process`, `process` and `postprocess`, and after the job, must be A1111's."""
    assert_the_stand_in_traces_like_a1111(name, a1111_traces[name], stand_in)


@needs_a1111
@pytest.mark.parametrize("name", list(contract.HIRES_CASES))
def test_the_hires_pass_conditions_like_a1111(a1111_traces, stand_in, name):
    """The adapter shadows both conditioning methods and crops like the hires pass: which one the
    pass calls (latent upscaler and mask weight < 1: img2img's; = 1: txt2img's; other upscalers:
    img2img's), with which shapes, and the sampled latent's shape after truncation."""
    case = contract.CASES[name]
    latent = case.fields["hr_upscaler"].startswith("Latent")
    full_mask = case.options["inpainting_mask_weight"] >= 1
    expected = "txt2img_image_conditioning" if latent and full_mask else "img2img_image_conditioning"
    trace = comparable(a1111_traces[name])
    hires = [event for event, facts in trace if event.endswith("_image_conditioning") and facts["is_hr_pass"]]
    assert hires == [expected]
    assert_the_stand_in_traces_like_a1111(name, a1111_traces[name], stand_in)
