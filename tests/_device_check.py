"""A virtual device that fails on any cross-device operation, for code the meta device cannot run.

The meta device has no data, so graph code that reads values (number of graphs = int(batch.max()) + 1, edge lists
built from the batch vector, bincount) cannot run on it. `VirtualDevice` keeps the data real, on the CPU, and
tracks which tensors *belong to the device*; inside `with VirtualDevice() as dev:`:

* `dev.device` (torch.device('meta') by default) is the device to pass around: factory calls with device=<it>
  (torch.zeros, arange, randn, full, ...) make CPU tensors tagged as on-device; `.to(<it>)` tags (copying, as a
  real host-to-device transfer does), `.cpu()` / `.to('cpu')` untag (copying); `Tensor.device` of a tagged tensor
  reports the virtual device, so `torch.zeros(n, device=x.device)` is on-device like x;
* module parameters and buffers are tagged by `module.to(<it>)` (nn.Module._apply), and stay tagged through
  `copy.deepcopy` and `nn.Parameter(...)`; `.grad` and every other output of an op on tagged inputs is tagged;
* an op that mixes tagged tensors with untagged tensors of dim > 0 raises CrossDeviceError (a RuntimeError, worded
  like PyTorch's "Expected all tensors to be on the same device"); untagged 0-dim tensors are allowed, as CPU
  scalars are on CUDA. Transfers (.to, .copy_, factories with device=) are not mixing;
* `.numpy()` of a tagged tensor raises, as it does for a CUDA tensor; `.item()`, `.tolist()`, `int()` work;
  torch.save writes tagged tensors as the CPU tensors they are (as a CUDA checkpoint loads with map_location='cpu').

Generators: the meta device has none, so gendiff.device.make_generator gives a CPU generator, which factory calls
with device=<virtual> accept (they run on the CPU). Limits: code run inside TorchScript or C++ (autograd's
backward, optimizer foreach kernels) is not seen, and the check is stricter than CUDA in one place: indexing a
device tensor with CPU indices (which CUDA allows, at the price of a copy) counts as mixing. Tensors tagged inside
the context stay ordinary CPU tensors after it; give a schedule instance used here no other device afterwards
(its per-device table cache would hold a CPU tensor under the virtual device's name).
"""
from __future__ import annotations

import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

_Base = torch._C.TensorBase
_TRANSFERS = {_Base.copy_}
_PASS_THROUGH = {torch._C._nn._parse_to, torch._has_compatible_shallow_copy_type}


class CrossDeviceError(RuntimeError):
    """An op mixed tensors on the virtual device with CPU tensors (a real device raises RuntimeError there)."""


def _descriptor(func, attr: str, method: str) -> bool:
    return getattr(func, "__self__", None) is getattr(_Base, attr) and getattr(func, "__name__", "") == method


class VirtualDevice(TorchFunctionMode):
    def __init__(self, device: str = "meta"):
        super().__init__()
        self.device = torch.device(device)
        if self.device.type == "cpu":
            raise ValueError("the virtual device must not be the CPU (its tensors are CPU tensors underneath)")
        self._tagged: dict[int, weakref.ref] = {}
        self._fake_devices = True  # False while pickling: torch.save must see (and write) the real CPU data
        self.ops_seen = 0  # how many torch calls the check looked at (tests assert it is not vacuous)

    # ---- tags ----------------------------------------------------------------------------------------------------
    def is_on_device(self, t) -> bool:
        """True for a tensor that belongs to the virtual device."""
        ref = self._tagged.get(id(t))
        return ref is not None and ref() is t

    def _set(self, t: torch.Tensor, on: bool) -> torch.Tensor:
        key = id(t)
        if on and not self.is_on_device(t):
            self._tagged[key] = weakref.ref(t, lambda _, k=key, d=self._tagged: d.pop(k, None))
        elif not on and self.is_on_device(t):
            del self._tagged[key]
        return t

    def tag(self, t: torch.Tensor) -> torch.Tensor:
        return self._set(t, True)

    # ---- the mode ------------------------------------------------------------------------------------------------
    def __enter__(self):
        base_new = torch.nn.Parameter.__dict__["__new__"]
        self._saved_new = base_new
        new = base_new.__func__ if isinstance(base_new, staticmethod) else base_new
        mode = self

        def parameter_new(cls, data=None, requires_grad=True):  # Parameter(tagged) and deepcopy keep the tag
            out = new(cls, data, requires_grad)
            return mode.tag(out) if data is not None and mode.is_on_device(data) else out

        torch.nn.Parameter.__new__ = staticmethod(parameter_new)
        self._saved_reduce = reduce_ex = torch.Tensor.__dict__["__reduce_ex__"]

        def tensor_reduce_ex(t, proto):  # not routed through __torch_function__, and it asks t.device how to save
            fake, mode._fake_devices = mode._fake_devices, False
            try:
                return reduce_ex(t, proto)
            finally:
                mode._fake_devices = fake

        torch.Tensor.__reduce_ex__ = tensor_reduce_ex
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__new__ = self._saved_new
        torch.Tensor.__reduce_ex__ = self._saved_reduce
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops_seen += 1
        if func in _PASS_THROUGH:
            return func(*args, **kwargs)
        if _descriptor(func, "device", "__get__"):
            return self.device if self._fake_devices and self.is_on_device(args[0]) else func(*args)
        if _descriptor(func, "data", "__set__"):  # nn.Module._apply: param.data = param.to(device)
            func(*args)
            self._set(args[0], self.is_on_device(args[1]))
            return None
        if func in (_Base.numpy, torch.Tensor.__array__) and self.is_on_device(args[0]):
            raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy "
                            "the tensor to host memory first (virtual device)")
        if func is _Base.to:
            return self._to(args, kwargs)
        if func is _Base.cpu:
            x = args[0]
            return x.clone() if self.is_on_device(x) else x
        if func is torch.Tensor.__deepcopy__:  # not an op: the memo holds unrelated tensors; the copy follows self
            return self._set(func(*args, **kwargs), self.is_on_device(args[0]))
        if kwargs.get("device") is not None:
            return self._factory(func, args, kwargs)
        flat = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        on = [a for a in flat if self.is_on_device(a)]
        if on and func not in _TRANSFERS:
            strays = [a for a in flat if not self.is_on_device(a) and a.dim() > 0]
            if strays:
                raise CrossDeviceError(
                    f"Expected all tensors to be on the same device, but found at least two devices, {self.device} "
                    f"and cpu! ({_name(func)}: {len(on)} tensor(s) on {self.device} mixed with cpu tensor(s) of "
                    f"shape {', '.join(str(tuple(s.shape)) for s in strays[:3])}; virtual device)")
        out = func(*args, **kwargs)
        if func in _TRANSFERS:
            return out  # copy_ returns its destination, which keeps its own device
        if on:
            ids = {id(a) for a in flat}
            out = tree_map(lambda o: self.tag(o) if isinstance(o, torch.Tensor) and
                           (id(o) not in ids or self.is_on_device(o)) else o, out)
        return out

    def _target(self, device) -> bool | None:
        if device is None:
            return None
        device = torch.device(device)
        if device.type == self.device.type:
            return True
        if device.type == "cpu":
            return False
        raise RuntimeError(f"{device} is not available under the virtual device (only {self.device} and cpu)")

    def _to(self, args, kwargs):
        x, rest = args[0], args[1:]
        other = next((a for a in list(rest) + list(kwargs.values()) if isinstance(a, torch.Tensor)), None)
        parse = {k: v for k, v in kwargs.items() if k != "copy"}  # _parse_to takes no copy=
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest, **parse)
        target = self.is_on_device(other) if other is not None else self._target(device)
        target = self.is_on_device(x) if target is None else target
        out = x.to(device="cpu", dtype=dtype if dtype is not None else x.dtype, non_blocking=non_blocking,
                   copy=bool(kwargs.get("copy", False)),
                   memory_format=memory_format if memory_format is not None else torch.preserve_format)
        if out is x and target != self.is_on_device(x):
            out = x.clone()  # a transfer copies; the source keeps its device
        return self._set(out, target)

    def _factory(self, func, args, kwargs):
        target = self._target(kwargs["device"])
        out = func(*args, **{**kwargs, "device": "cpu"})
        inputs = {id(a): a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)}

        def place(o):
            if not isinstance(o, torch.Tensor):
                return o
            if id(o) in inputs and self.is_on_device(o) != target:
                o = o.clone()  # torch.as_tensor(x, device=...) returns x itself on the same real device
            return self._set(o, target)

        return tree_map(place, out)


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
