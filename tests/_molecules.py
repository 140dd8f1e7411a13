"""What the molecule tests share: a seeded rotation and a seeded batch of zero-CoM molecule states."""
import torch

from gendiff.domains.molecules import model as M


def rotation(seed=0):
    """A random 3 x 3 orthogonal matrix (float32), from a QR in float64."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float()


def random_batch(sizes=(5, 4, 3), seed=1, generator=None):
    """(x (N, STATE_DIM) with zero-CoM positions per molecule, batch vector) for molecules of `sizes` atoms, drawn
    from `generator` (default: a fresh one seeded with `seed`), which a caller may go on drawing from."""
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    vec = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.randn(int(sum(sizes)), M.STATE_DIM, generator=gen)
    x[:, :3] = M.ZeroCoMSpace().project(x[:, :3], vec)
    return x, vec
