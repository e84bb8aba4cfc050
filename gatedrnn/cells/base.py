"""What the three cells share: torch.nn's parameters, initialization and input checks."""

from __future__ import annotations

import torch
from torch import nn

from gatedrnn import _checks
from gatedrnn.capture import RefusesScript


class CellBase(RefusesScript, nn.RNNCellBase):
    """Parameters ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H)``,
    ``bias_hh (G*H)`` for ``G`` gate blocks, registered and initialized by
    :class:`torch.nn.RNNCellBase` as torch.nn's cells are: every parameter uniform in
    ``(-1/sqrt(H), 1/sqrt(H))``, in this order. Each cell also subclasses its torch.nn
    twin (``LSTMCell(CellBase, torch.nn.LSTMCell)``), so type checks see what it is.

    Args:
        input_size (int): ``I``, the number of input features.
        hidden_size (int): ``H``, the number of features of the hidden state.
        bias (bool): whether the cell has ``bias_ih`` and ``bias_hh``. Default: ``True``.
        device (torch.device, optional): where the parameters are created. Default: ``None``.
        dtype (torch.dtype, optional): the parameters' floating-point type. Default: ``None``.
    """

    num_gates: int

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        input_size = _checks.positive_int("input_size", input_size)
        hidden_size = _checks.positive_int("hidden_size", hidden_size)
        _checks.boolean("bias", bias)
        # torch.nn.RNNCellBase itself: the cells' own torch.nn __init__ take no num_chunks
        nn.RNNCellBase.__init__(self, input_size, hidden_size, bias, self.num_gates, device, dtype)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # a torch.nn cell pickled whole and loaded as ours (torch.nn's classes swapped for gatedrnn's), or a
        # pickle from before an option existed: what it lacks takes the constructor's default, torch.nn's behaviour
        for name, value in self._defaults().items():
            if name not in state:
                setattr(self, name, value)

    def _defaults(self) -> dict:
        """The constructor's defaults of what the cell adds to torch.nn's attributes: what a
        pickle that lacks them loads with."""
        return {}

    def _check_input(self, input) -> tuple[torch.Tensor, bool]:
        """The input as ``(B, I)`` and whether it came unbatched as ``(I,)``."""
        return _checks.step_input(input, self.weight_ih, self.input_size)

    def _check_state(self, name: str, value, batch: int, unbatched: bool, size: int, x: torch.Tensor):
        if value is None:
            return x.new_zeros(batch, size)
        value = _checks.float_tensor(name, value, self.weight_ih)
        expected = (size,) if unbatched else (batch, size)
        _checks.shape(name, value, expected, "(batch, hidden_size)" if not unbatched else "(hidden_size,)")
        return value.unsqueeze(0) if unbatched else value

    # -- conversion to and from torch.nn ------------------------------------------------

    def _config(self) -> dict:
        config = {"input_size": self.input_size, "hidden_size": self.hidden_size, "bias": self.bias}
        if hasattr(self, "nonlinearity"):
            config["nonlinearity"] = self.nonlinearity
        return config

    @classmethod
    def from_torch(cls, module: nn.Module):
        """A copy of torch.nn's matching cell, with its weights, device, dtype and mode.

        Args:
            module (torch.nn.Module): a :class:`torch.nn.LSTMCell` for
                ``LSTMCell.from_torch`` (``torch.nn.GRUCell``, ``torch.nn.RNNCell`` for the
                others); anything else is a ``TypeError``.

        Returns:
            The gatedrnn cell.
        """
        torch_cls = getattr(nn, cls.__name__)
        if not isinstance(module, torch_cls):
            raise TypeError(f"module must be a torch.nn.{cls.__name__}, got {type(module).__name__}")
        config = {"input_size": module.input_size, "hidden_size": module.hidden_size, "bias": module.bias}
        if hasattr(module, "nonlinearity"):
            config["nonlinearity"] = module.nonlinearity
        w = module.weight_ih
        cell = cls(**config, device=w.device, dtype=w.dtype)
        cell.load_state_dict(module.state_dict())
        return cell.train(module.training)

    def to_torch(self) -> nn.Module:
        """A torch.nn cell with a copy of this cell's weights, device, dtype and mode (a
        variant torch.nn lacks, peepholes or ``reset_after=False``, is a ``ValueError``)."""
        w = self.weight_ih
        module = getattr(nn, type(self).__name__)(**self._config(), device=w.device, dtype=w.dtype)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)
