# Copyright (c) onprem.daskhpc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files root reads and writes for other accounts, without following a path anyone else controls.

The CA runs as root and writes users' credentials into their homes. A user can change anything
in their own tree at any moment (swap a directory for a symlink, a file for a FIFO, between two
system calls), so nothing here hands a path to the kernel to resolve below a directory root does
not control. Directories are opened one component at a time with ``O_NOFOLLOW`` relative to the
parent's descriptor, checked with ``fstat`` on the descriptor that will be used, files are made
under a temporary name with ``O_CREAT|O_EXCL|O_NOFOLLOW``, owner and mode are set with
``fchown``/``fchmod`` on the open file, and ``rename`` (which never follows the target name)
puts them in place.

The rule for a directory path, walked from ``/``:

* directories root controls (owned by root, not writable by others - or sticky, like /tmp, where
  others cannot rename root's entries) may be crossed, and root's own symlinks in them are
  followed (only root can have made them);
* after that, only directories owned by the files' owner, never a symlink;
* with ``home``: the home's parents must all be root-controlled, the home itself must be a directory
  owned by the owner (not a symlink; created as the owner's when missing and asked to create), and
  everything below it too;
* anything else - a symlink the user made, a FIFO, a directory of another account, a root
  directory inside the user's tree - raises :class:`PathRefused` naming it.

Pure Python, standard library only (no Ansible imports).
"""

from __future__ import annotations

import datetime
import errno
import os
import secrets
import stat

MAX_SYMLINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO a user put in place of a file must not hang root.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class PathRefused(Exception):
    """A path root must not use, and why."""


def _is_root_controlled(st):
    return st.st_uid == 0 and (not st.st_mode & 0o022 or bool(st.st_mode & stat.S_ISVTX))


def _is_owner(owner):
    return owner not in (None, 0)


class SafeDir:
    """An open directory that was reached safely; use as a context manager (closes the descriptor).

    ``users_tree`` is True when the directory belongs to the owner (not root): then every file in
    it must belong to the owner as well, since a root-owned file there may be a hard link to one of
    root's files.
    """

    def __init__(self, fd, path, owner, users_tree):
        self.fd = fd
        self.path = path
        self.owner = owner
        self.users_tree = users_tree

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _where(self, name):
        return os.path.join(self.path, name)

    def _open_file(self, name):
        """(fd, stat) of regular file *name*, or (None, None) when it does not exist."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathRefused("%s is a symlink" % self._where(name)) from None
            raise
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "%s is not a regular file" % self._where(name)
        elif self.users_tree and st.st_uid != self.owner:
            problem = "%s belongs to uid %d, not to uid %d whose directory it is in" % (
                self._where(name), st.st_uid, self.owner)
        if problem:
            os.close(fd)
            raise PathRefused(problem)
        return fd, st

    def read(self, name, limit=1 << 20):
        """Contents of regular file *name* (at most *limit* bytes), None when it does not exist."""
        fd, _st = self._open_file(name)
        if fd is None:
            return None
        try:
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read(limit)
        finally:
            os.close(fd)

    def fix(self, name, mode, *, uid=None, gid=None, check_mode=False):
        """Give existing file *name* its mode and owner through its descriptor; True if it was wrong."""
        fd, st = self._open_file(name)
        if fd is None:
            return False
        try:
            wrong_mode = stat.S_IMODE(st.st_mode) != mode
            wrong_owner = (uid is not None and st.st_uid != uid) or (gid is not None and st.st_gid != gid)
            if not check_mode:
                if wrong_owner:
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                if wrong_mode or wrong_owner:  # chown may clear mode bits
                    os.fchmod(fd, mode)
            return wrong_mode or wrong_owner
        finally:
            os.close(fd)

    def write(self, name, data, mode, *, uid=None, gid=None, fsync=True, backup=False):
        """Replace *name* with *data*, never half-written; returns the backup's path (or None).

        The temporary file gets its mode and owner before it is renamed into place, so a key is
        never readable by others, not even for a moment.
        """
        backup_path = None
        if backup:
            fd, st = self._open_file(name)
            if fd is not None:
                with os.fdopen(fd, "rb") as handle:
                    old = handle.read()
                backup_path = "%s.%d.%s~" % (name, os.getpid(), _stamp())
                self.write(backup_path, old, stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, fsync=fsync)
                backup_path = self._where(backup_path)
        tmp = ".%s.%s.tmp" % (name, secrets.token_hex(6))
        fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=self.fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if uid is not None or gid is not None:
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                os.fchmod(fd, mode)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except IsADirectoryError:
                raise PathRefused("%s is a directory" % self._where(name)) from None
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise
        if fsync:
            os.fsync(self.fd)  # the rename itself survives a crash
        return backup_path


def _stamp():
    return datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")


def _parts(path):
    return [p for p in path.split("/") if p and p != "."]


class _Walk:
    """One walk from a directory descriptor; see the module's docstring for the rule."""

    def __init__(self, owner, create, mode, gid):
        self.owner = owner
        self.create = create
        self.mode = mode
        self.gid = gid
        self.users_tree = False
        self.links = 0
        self.where = "/"
        self.fd = os.open("/", _DIR_FLAGS)

    def _replace(self, fd, where):
        os.close(self.fd)
        self.fd, self.where = fd, where

    def close(self):
        os.close(self.fd)

    def steps(self, parts, only_root=False, must_be_owner=False):
        queue = list(parts)
        while queue:
            name = queue.pop(0)
            target = self.step(name, only_root, must_be_owner and not queue)
            if target is not None:  # root's own symlink: walk its target instead
                self.links += 1
                if self.links > MAX_SYMLINKS:
                    raise PathRefused("%s: too many levels of symlinks" % self.where)
                if target.startswith("/"):
                    self._replace(os.open("/", _DIR_FLAGS), "/")
                queue[:0] = _parts(target)

    def _open_child(self, name):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            if not self.create:
                raise
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass  # made by someone else meanwhile: judged like any other directory below
        else:
            child = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
            if _is_owner(self.owner) or self.gid is not None:
                os.fchown(child, self.owner if _is_owner(self.owner) else -1,
                          -1 if self.gid is None else self.gid)
            os.fchmod(child, self.mode)  # the umask must not weaken it
            return child
        return os.open(name, _DIR_FLAGS, dir_fd=self.fd)

    def step(self, name, only_root, must_be_owner):
        """Enter *name*; returns a symlink's target to walk instead, or None."""
        where = os.path.join(self.where, name)
        try:
            child = self._open_child(name)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such directory", where) from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                raise PathRefused("%s is not a directory" % where) from None
            if self.users_tree or must_be_owner or st.st_uid != 0:
                raise PathRefused("%s is a symlink (made by uid %d)" % (where, st.st_uid)) from None
            return os.readlink(name, dir_fd=self.fd)
        st = os.fstat(child)
        problem = None
        if must_be_owner or self.users_tree:
            if not _is_owner(self.owner) or st.st_uid != self.owner:
                problem = "%s belongs to uid %d, not to uid %s" % (where, st.st_uid, self.owner)
            self.users_tree = True
        elif not _is_root_controlled(st):
            if only_root or not _is_owner(self.owner) or st.st_uid != self.owner:
                problem = "%s is owned by uid %d%s: only root's directories may lead to %s" % (
                    where, st.st_uid, " and writable by others" if st.st_uid == 0 else "",
                    "this path" if only_root or not _is_owner(self.owner) else "uid %d's" % self.owner)
            self.users_tree = True
        if problem:
            os.close(child)
            raise PathRefused(problem)
        self._replace(child, where)
        return None


def open_dir(path, owner=None, *, home=None, create=False, mode=0o700, gid=None):
    """A :class:`SafeDir` for *path*, whose files will belong to *owner* (uid; None or 0 is root).

    With *home*, *path* must be *home* or below it, and the home must be the owner's own directory.
    With *create*, missing directories (a home too, never its parents) are made with *mode* and the
    owner's uid and *gid*.
    Raises :class:`PathRefused` (see the module's rule) or FileNotFoundError (without *create*).
    """
    path = os.path.normpath(path)
    if not path.startswith("/"):
        raise PathRefused("%s is not an absolute path" % path)
    walk = _Walk(owner, create, mode, gid)
    try:
        if home is not None:
            home = os.path.normpath(home)
            if not _is_owner(owner):
                raise PathRefused("%s: a home directory needs an owner other than root" % home)
            if home == "/" or os.path.commonpath([home, path]) != home:
                raise PathRefused("%s is not inside the home directory %s" % (path, home))
            walk.create = False  # never the home's parents
            walk.steps(_parts(os.path.dirname(home)), only_root=True)
            walk.create = create  # a missing home is made the owner's, in root's directory (as pam_mkhomedir)
            walk.steps([os.path.basename(home)], must_be_owner=True)
            walk.steps(_parts(os.path.relpath(path, home)))
        else:
            walk.steps(_parts(path))
    except BaseException:
        walk.close()
        raise
    return SafeDir(walk.fd, path, owner if _is_owner(owner) else None, walk.users_tree)
