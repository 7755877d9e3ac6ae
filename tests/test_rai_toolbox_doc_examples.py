"""The examples of rai-toolbox 0.2.1's optimizer documentation pages, run as
doctests with only the import changed to ``paramtx.optim``.

Each example is the page's code with the output the code truly prints. The
same text is also run against ``rai_toolbox.optim`` itself, which shows that
the outputs below are rai-toolbox's under this torch, not ours alone.

Defects of the pages interpreted here (the pages were built with an older torch;
the values printed are the pages' in every case):

* the ``ChainedParamTransformingOptimizer`` page:
  - the first repr is printed right after the assignment ``optim = ...(...)``,
    which prints nothing; we add the line ``>>> optim`` that prints it;
  - both reprs lack ``differentiable: False``, ``foreach: None`` and
    ``fused: None``: keys of ``torch.optim.SGD``'s defaults since torch 2.x,
    printed by rai-toolbox too under the installed torch;
  - the second repr names ``TopQGradientOptim`` (a truncated
    ``TopQGradientOptimizer``), drops the blank line torch prints between
    parameter groups, and stops before group 1's ``weight_decay: 0`` and the
    closing ``)``;
  - ``x2.grad``'s second row lost its alignment (whitespace only).
* the ``TopQGradientOptimizer`` page: the loops print ``x:`` and ``---``
  lines (``f"grad (q={q})\\n{x.grad}\\nx:\\n{x}\\n---"``) that the page dropped.
* the other pages: none.
"""

from __future__ import annotations

import doctest
import warnings

import pytest
import torch

PAGE_L1Q_FRANK_WOLFE = r"""
>>> import torch as tr
>>> from rai_toolbox.optim import L1qFrankWolfe
>>> x = tr.tensor([1.0, 1.0, 1.0], requires_grad=True)
>>> optim = L1qFrankWolfe(
...     [x],
...     q=0.30,
...     epsilon=1.8,
...     param_ndim=None,
... )
>>> (tr.tensor([0.0, 1.0, 2.0]) * x).sum().backward()
>>> optim.step()
>>> x  # the updated parameter; has a L1-norm of 1.8
tensor([ 0.0000, -0.9000, -0.9000], requires_grad=True)
"""

PAGE_L2_PROJECTED = r"""
>>> import torch as tr
>>> from rai_toolbox.optim import L2ProjectedOptim
>>> x = tr.tensor([-1.0, 1.0], requires_grad=True)
>>> optim = L2ProjectedOptim([x], param_ndim=None, InnerOpt=tr.optim.SGD, lr=1.0, epsilon=0.8)
>>> (tr.tensor([2.0, 2.0]) * x).sum().backward()
>>> x.grad # the un-normed gradient
tensor([2., 2.])
>>> optim.step()
>>> x.grad # the normalized gradient
tensor([0.7071, 0.7071])
>>> x  # the updated parameter
tensor([-0.7885,  0.1353], requires_grad=True)
>>> x.norm(p=2).item() # `x` lies on the L2-ball of radius 0.8
0.800000011920929
"""

PAGE_CHAINED = r"""
>>> from rai_toolbox.optim import (
... ChainedParamTransformingOptimizer,
... ClampedGradientOptimizer,
... TopQGradientOptimizer,
... )
>>> import torch as tr
>>> from functools import partial
>>> x1 = tr.ones(3, requires_grad=True)  # shape-(3,)
>>> optim = ChainedParamTransformingOptimizer(
...     partial(TopQGradientOptimizer, q=0.33),
...     partial(ClampedGradientOptimizer, clamp_max=2.8),
...     params=[x1],
...     lr=1.0,
...     param_ndim=None, # we don't want any broadcasting to occur
... )
>>> optim
ClampedGradientOptimizer ○ TopQGradientOptimizer [SGD](
Parameter Group 0
    clamp_max: 2.8
    clamp_min: None
    dampening: 0
    differentiable: False
    dq: 0.0
    foreach: None
    fused: None
    grad_bias: 0
    grad_scale: 1
    lr: 1.0
    maximize: False
    momentum: 0
    nesterov: False
    param_ndim: None
    q: 0.33
    weight_decay: 0
)
>>> (tr.tensor([1.0, 2.0, 3.0]) * x1).sum().backward()
>>> optim.step()
>>> x1.grad  # element-0 should be zero'd by top-q; element-2 should be clamped to 2.8
tensor([0.0000, 2.0000, 2.8000])
>>> x1
tensor([ 1.0000, -1.0000, -1.8000], requires_grad=True)
>>> x2 = tr.ones(2, 3, requires_grad=True)  # shape-(2, 3)
>>> optim.add_param_group(dict(params=x2, param_ndim=1, q=0.64))
>>> optim
ClampedGradientOptimizer ○ TopQGradientOptimizer [SGD](
Parameter Group 0
    clamp_max: 2.8
    clamp_min: None
    dampening: 0
    differentiable: False
    dq: 0.0
    foreach: None
    fused: None
    grad_bias: 0
    grad_scale: 1
    lr: 1.0
    maximize: False
    momentum: 0
    nesterov: False
    param_ndim: None
    q: 0.33
    weight_decay: 0
<BLANKLINE>
Parameter Group 1
    clamp_max: 2.8
    clamp_min: None
    dampening: 0
    differentiable: False
    dq: 0.0
    foreach: None
    fused: None
    grad_bias: 0
    grad_scale: 1
    lr: 1.0
    maximize: False
    momentum: 0
    nesterov: False
    param_ndim: 1
    q: 0.64
    weight_decay: 0
)
>>> optim.zero_grad()
>>> (tr.tensor([1.0, 2.0, 3.0]) * (x1 + x2)).sum().backward()
>>> optim.step()
>>> x1.grad
tensor([0.0000, 2.8000, 2.8000])
>>> x2.grad
tensor([[0.0000, 0.0000, 2.8000],
        [0.0000, 0.0000, 2.8000]])
"""

PAGE_TOP_Q = r"""
>>> import torch as tr
>>> from rai_toolbox.optim import TopQGradientOptimizer
>>> gradient = tr.tensor([[0.5,   1.0],
...                       [-2.5, 0.30]])
>>> for q in [0.0, 0.25, 0.5, 0.75, 1.0]:
...     x = tr.ones((2, 2), requires_grad=True)
...     optim = TopQGradientOptimizer(params=[x], lr=1.0, q=q, param_ndim=None)
...     x.backward(gradient=gradient)
...     optim.step()
...     print(f"grad (q={q})\n{x.grad}\nx:\n{x}\n---")
grad (q=0.0)
tensor([[ 0.5000,  1.0000],
        [-2.5000,  0.3000]])
x:
tensor([[0.5000, 0.0000],
        [3.5000, 0.7000]], requires_grad=True)
---
grad (q=0.25)
tensor([[ 0.5000,  1.0000],
        [-2.5000,  0.0000]])
x:
tensor([[0.5000, 0.0000],
        [3.5000, 1.0000]], requires_grad=True)
---
grad (q=0.5)
tensor([[ 0.0000,  1.0000],
        [-2.5000,  0.0000]])
x:
tensor([[1.0000, 0.0000],
        [3.5000, 1.0000]], requires_grad=True)
---
grad (q=0.75)
tensor([[ 0.0000,  0.0000],
        [-2.5000,  0.0000]])
x:
tensor([[1.0000, 1.0000],
        [3.5000, 1.0000]], requires_grad=True)
---
grad (q=1.0)
tensor([[0., 0.],
        [0., 0.]])
x:
tensor([[1., 1.],
        [1., 1.]], requires_grad=True)
---
>>> gradient = tr.tensor([[0.5,   1.0],
...                       [-2.5, 0.30]])
>>> for q in [0.0, 0.5, 1.0]:
...     x = tr.ones((2, 2), requires_grad=True)
...     optim = TopQGradientOptimizer(params=[x], lr=1.0, q=q, param_ndim=1)
...     x.backward(gradient=gradient)
...     optim.step()
...     print(f"grad (q={q})\n{x.grad}\nx:\n{x}\n---")
grad (q=0.0)
tensor([[ 0.5000,  1.0000],
        [-2.5000,  0.3000]])
x:
tensor([[0.5000, 0.0000],
        [3.5000, 0.7000]], requires_grad=True)
---
grad (q=0.5)
tensor([[ 0.0000,  1.0000],
        [-2.5000,  0.0000]])
x:
tensor([[1.0000, 0.0000],
        [3.5000, 1.0000]], requires_grad=True)
---
grad (q=1.0)
tensor([[0., 0.],
        [0., 0.]])
x:
tensor([[1., 1.],
        [1., 1.]], requires_grad=True)
---
"""

PAGES = {
    "L1qFrankWolfe": PAGE_L1Q_FRANK_WOLFE,
    "L2ProjectedOptim": PAGE_L2_PROJECTED,
    "ChainedParamTransformingOptimizer": PAGE_CHAINED,
    "TopQGradientOptimizer": PAGE_TOP_Q,
}


def run_doctest(name: str, text: str) -> tuple[int, str]:
    """Run ``text`` as a doctest; return the number of failures and the report."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, name, f"{name}.txt", 0)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    # The pages print CPU tensors: run them on the CPU whatever PARAMTX_TEST_DEVICE says.
    with warnings.catch_warnings(), torch.device("cpu"):
        warnings.simplefilter("ignore")  # rai-toolbox's TypedStorage deprecation warning
        runner.run(test, out=report.append)
    return runner.failures, "".join(report)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_doc_page_example_prints_the_page_values_on_paramtx(page: str) -> None:
    text = PAGES[page].replace("rai_toolbox.optim", "paramtx.optim")
    assert "rai_toolbox" not in text
    failures, report = run_doctest(page, text)
    assert failures == 0, report


@pytest.mark.parametrize("page", sorted(PAGES))
def test_doc_page_example_prints_the_same_on_rai_toolbox(page: str) -> None:
    pytest.importorskip("rai_toolbox.optim")
    failures, report = run_doctest(page, PAGES[page])
    assert failures == 0, report
