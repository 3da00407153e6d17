"""The host filesystem under the workdir images: thin provisioning's one failure, named.

Workdir images (_workdir_image, _spare_images) are sparse files: ``disk_bytes`` is a cap
on what a session may write, not space set aside for it (200 idle sessions of 1 GiB start
on a host with a few GB free; a host whose root is in RAM gives nothing up front). The
price: when the filesystem holding the images (the Sandbox root's) fills, whoever filled
it, the loop device's writeback into an image fails ("lost async page write") while the
cell's own write() calls, and often its fsync, were accepted. The cell would say "ok" and
its files would be gone.

So, with one ``statvfs`` each (about a microsecond):

* a session's image is not mounted, and no spare is formatted, while the host filesystem
  has less than :func:`margin` free (:func:`check_room`): the start is refused with a
  SandboxError that names the root, the free space and the remedy;
* after a cell that grew its image, the host's free space is read again (:func:`shortage`);
  under the margin, the cell's verdict is status "disk" with a reason that blames the HOST
  filesystem, not the cell's cap (Session._disk_after_cell). A cell that did not grow its
  image pays nothing.

Not covered (docs/threat_model.md): writeback that happens after the cell's verdict (a cell
that wrote without fsync and ended with room still left), and others filling the host
later. Only space the operator sizes for is a guarantee: free space for the sessions'
``disk_bytes`` that will really be used, or fallocate'd images outside this package.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SandboxError

MiB = 1 << 20
#: The least free space a mount or a grown cell accepts. An empty image's first mount and
#: first cell write some MiB of filesystem metadata (bitmaps, the journal-less ext4's
#: directories, the inode tables ext4 zeroes lazily after the mount) before the cell's own
#: files; 64 MiB leaves room for those and a first cell of ordinary size.
MIN_MARGIN = 64 * MiB
#: ...and a sixteenth of the cap: a session promised more may write more between two looks
#: (a cell's writes reach the host at writeback), so a larger cap asks for more headroom,
#: without reserving the cap itself (1 GiB: 64 MiB; 16 GiB: 1 GiB).
MARGIN_FRACTION = 16


class HostSpaceLow(SandboxError):
    """The filesystem holding the workdir images has less free space than the margin."""


def margin(disk_bytes: int) -> int:
    """Free space the images' host filesystem must keep for a session of this cap."""
    return max(MIN_MARGIN, disk_bytes // MARGIN_FRACTION)


def free_bytes(path: Path) -> int:
    """Bytes the host filesystem holding `path` (or its nearest existing parent) has free
    for unprivileged use: f_bavail, the cautious figure (the root-reserved blocks are not
    counted on)."""
    while True:
        try:
            v = os.statvfs(path)
        except FileNotFoundError:
            if path.parent == path:
                raise
            path = path.parent
            continue
        return v.f_bavail * v.f_frsize


def check_room(images: Path, disk_bytes: int, what: str) -> None:
    """Raises HostSpaceLow when the filesystem of `images` (the root's .images) has less
    than margin(disk_bytes) free; `what` names what was about to be done."""
    free = free_bytes(images)
    need = margin(disk_bytes)
    if free < need:
        raise HostSpaceLow(
            f"workdir: {what} refused: the host filesystem holding the Sandbox root's workdir images "
            f"({images}) has {free} bytes free, under the {need}-byte margin a session of disk_bytes="
            f"{disk_bytes} needs (images are thin-provisioned: a full host loses the workdir's writes); "
            "hint: free space there, or put the Sandbox root on a filesystem sized for the sessions' disk_bytes"
        )


def shortage(images: Path, disk_bytes: int) -> str | None:
    """After a cell that grew its image: the reason to give when the host filesystem of
    `images` is under the margin (its writes may be lost), else None."""
    try:
        free = free_bytes(images)
    except OSError as e:
        return (
            f"the host filesystem holding the workdir images ({images}) could not be read ({e}): "
            "writes to the workdir may be lost"
        )
    need = margin(disk_bytes)
    if free >= need:
        return None
    return (
        f"the HOST filesystem holding the workdir images ({images}) is full or nearly full ({free} bytes "
        f"free, under the {need}-byte margin): writes to the workdir may be lost; this is not the "
        f"cell's own {disk_bytes}-byte disk limit; hint: free space on the host"
    )
