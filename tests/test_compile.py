"""learner.compile: the loss of torch.compile'd agent unrolls and mixers equals the eager one."""
import sys
from pathlib import Path

import pytest
import torch

from lightning_marl.config import load
from lightning_marl.errors import ConfigError
from lightning_marl.experiment import build_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmark import synthetic_batch  # noqa: E402

INFO = {"n_agents": 3, "n_actions": 11, "obs_dim": 80, "state_dim": 120, "episode_limit": 20, "shaped_reward": False}


def loss_and_grads(make_config, mixer, compile_setting, batches):
    torch.manual_seed(0)
    module = build_module(load([f"mixer={mixer}", f"learner.compile={compile_setting}"]), INFO).train()
    out = []
    for batch in batches:  # different episode lengths: one dynamic-shape graph, no wrong reuse
        module.zero_grad()
        loss, _ = module.td_loss(batch)
        loss.backward()
        out.append((loss.detach(), torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])))
    return out, module


@pytest.mark.parametrize("mixer", ["qmix", "qfix_sum"])
def test_compiled_loss_equals_the_eager_loss(make_config, mixer):
    batches = [synthetic_batch(4, t, 3) for t in (12, 7, 20)]
    eager, _ = loss_and_grads(make_config, mixer, "null", batches)
    compiled, module = loss_and_grads(make_config, mixer, "aot_eager", batches)
    assert module.calls["mixer"] is not module.mixer  # the switch took effect
    for (loss_e, grad_e), (loss_c, grad_c) in zip(eager, compiled):
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad_c, grad_e, rtol=1e-4, atol=1e-5)
    assert "_orig_mod" not in "".join(module.state_dict())  # checkpoints do not change


def test_unknown_compile_backend_is_named(make_config):
    with pytest.raises(ConfigError, match="learner.compile=turbo is out of range; allowed: null or a torch.compile "
                                          "backend: .*inductor"):
        build_module(load(["learner.compile=turbo"]), INFO)
