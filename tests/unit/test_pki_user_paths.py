"""Root never follows a user's path: attacks on ~/.daskhpc/tls while the CA (root) writes credentials.

These tests run as root (like the CA). Each fake home belongs to an unprivileged uid; the user's
moves are made by the test, at the moments a real user would race the CA. Every attack must leave
root's files exactly as they were, and must not stop the other users' credentials.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from ansible_collections.onprem.daskhpc.plugins.module_utils._core import pki, safepath

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the CA runs as root; these attacks need root to test")

PASS = "correct horse battery staple"
DEFAULTS = {"days": 7, "renew_before_days": 2, "profile": "user", "create_dirs": True, "mode": "0600",
            "privatekey_mode": "0600", "dir_mode": "0700"}
MALLORY, ALICE = 65534, 10001
SECRET = b"root's secret\n"


@pytest.fixture(scope="module")
def pristine_ca(tmp_path_factory):
    ca_dir = str(tmp_path_factory.mktemp("pristine") / "ca")
    pki.ensure_ca(ca_dir, "unit CA", PASS)
    return ca_dir


@pytest.fixture
def ca_dir(pristine_ca, tmp_path):
    target = str(tmp_path / "ca")
    shutil.copytree(pristine_ca, target)
    return target


@pytest.fixture
def site(tmp_path):
    """/home with alice's and mallory's homes, and a root-only directory holding root's files."""
    homes = tmp_path / "home"
    homes.mkdir(mode=0o755)
    for name, uid in (("alice", ALICE), ("mallory", MALLORY)):
        home = homes / name
        home.mkdir(mode=0o755)
        os.chown(home, uid, uid)
    secret = tmp_path / "rootonly"
    secret.mkdir(mode=0o700)
    for name in ("user.pem", "user.key", "shadow"):
        (secret / name).write_bytes(SECRET)
        os.chmod(secret / name, 0o600)
    return tmp_path


def as_user(uid, path, make):
    """Make something in a user's tree and give it to the user, as the user would have it."""
    make(path)
    os.lchown(path, uid, uid)


def snapshot(directory):
    """Everything about a root directory an attack could change: names, contents, owners, modes."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            out[path] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                         open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None)
    st = os.lstat(directory)
    out[str(directory)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), None)
    return out


def request(site, name, uid, **extra):
    home = str(site / "home" / name)
    req = {"path": home + "/.daskhpc/tls/user.pem", "privatekey_path": home + "/.daskhpc/tls/user.key",
           "subject": {"CN": name}, "owner": str(uid), "group": str(uid), "home": home}
    req.update(extra)
    return req


def issue(ca_dir, *reqs, check_mode=False):
    results, _records = pki.ensure_certificates(ca_dir, PASS, list(reqs), defaults=DEFAULTS, check_mode=check_mode)
    return {r["path"].split("/")[-4]: r for r in results}


def assert_alice_served(site, results):
    tls = site / "home" / "alice" / ".daskhpc" / "tls"
    assert results["alice"]["changed"] and not results["alice"].get("refused")
    for path in (tls, tls / "user.pem", tls / "user.key"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (ALICE, ALICE)
        assert stat.S_IMODE(st.st_mode) == (0o700 if path == tls else 0o600)


# --- the user points their directories at root's ------------------------------------------------


@pytest.mark.parametrize("link", [".daskhpc", ".daskhpc/tls"])
def test_symlinked_directory_to_a_root_only_directory_is_refused(ca_dir, site, link):
    home = site / "home" / "mallory"
    if link == ".daskhpc/tls":
        as_user(MALLORY, home / ".daskhpc", lambda p: p.mkdir(mode=0o700))
    as_user(MALLORY, home / link, lambda p: p.symlink_to(site / "rootonly"))
    before = snapshot(site / "rootonly")
    results = issue(ca_dir, request(site, "alice", ALICE), request(site, "mallory", MALLORY))
    assert snapshot(site / "rootonly") == before
    assert "is a symlink" in results["mallory"]["refused"]
    assert_alice_served(site, results)


def test_root_owned_directory_inside_the_users_tree_is_refused(ca_dir, site):
    """A root-only directory placed in the user's tree (e.g. left by an admin) is not written into."""
    tls = site / "home" / "mallory" / ".daskhpc" / "tls"
    as_user(MALLORY, tls.parent, lambda p: p.mkdir(mode=0o700))
    tls.mkdir(mode=0o700)  # root's
    before = snapshot(tls)
    results = issue(ca_dir, request(site, "mallory", MALLORY))
    assert snapshot(tls) == before
    assert "belongs to uid 0, not to uid %d" % MALLORY in results["mallory"]["refused"]


def test_another_users_directory_is_refused(ca_dir, site):
    dotdir = site / "home" / "mallory" / ".daskhpc"
    as_user(MALLORY, dotdir, lambda p: p.mkdir(mode=0o700))
    os.chown(dotdir, ALICE, ALICE)
    assert "belongs to uid %d" % ALICE in issue(ca_dir, request(site, "mallory", MALLORY))["mallory"]["refused"]
    assert os.listdir(dotdir) == []


# --- the user points the files at root's ----------------------------------------------------------


@pytest.mark.parametrize("name", ["user.pem", "user.key"])
def test_symlinked_file_is_refused_and_its_target_untouched(ca_dir, site, name):
    tls = site / "home" / "mallory" / ".daskhpc" / "tls"
    as_user(MALLORY, tls.parent, lambda p: p.mkdir(mode=0o700))
    as_user(MALLORY, tls, lambda p: p.mkdir(mode=0o700))
    as_user(MALLORY, tls / name, lambda p: p.symlink_to(site / "rootonly" / "shadow"))
    before = snapshot(site / "rootonly")
    results = issue(ca_dir, request(site, "alice", ALICE), request(site, "mallory", MALLORY))
    assert snapshot(site / "rootonly") == before
    assert "%s is a symlink" % (tls / name) in results["mallory"]["refused"]
    assert_alice_served(site, results)


def test_hard_link_to_a_root_file_is_refused(ca_dir, site):
    """With fs.protected_hardlinks=0 a user can hard-link root's file into their tree; it is root's, not theirs."""
    tls = site / "home" / "mallory" / ".daskhpc" / "tls"
    as_user(MALLORY, tls.parent, lambda p: p.mkdir(mode=0o700))
    as_user(MALLORY, tls, lambda p: p.mkdir(mode=0o700))
    os.link(site / "rootonly" / "shadow", tls / "user.pem")
    before = snapshot(site / "rootonly")
    results = issue(ca_dir, request(site, "mallory", MALLORY))
    assert snapshot(site / "rootonly") == before
    assert "belongs to uid 0" in results["mallory"]["refused"]


@pytest.mark.timeout(20)
def test_fifo_instead_of_a_file_does_not_hang_root(ca_dir, site):
    tls = site / "home" / "mallory" / ".daskhpc" / "tls"
    as_user(MALLORY, tls.parent, lambda p: p.mkdir(mode=0o700))
    as_user(MALLORY, tls, lambda p: p.mkdir(mode=0o700))
    as_user(MALLORY, tls / "user.key", lambda p: os.mkfifo(p, 0o600))
    results = issue(ca_dir, request(site, "alice", ALICE), request(site, "mallory", MALLORY))
    assert "is not a regular file" in results["mallory"]["refused"]
    assert stat.S_ISFIFO(os.lstat(tls / "user.key").st_mode)
    assert_alice_served(site, results)


# --- the home itself ----------------------------------------------------------------------------------


def test_home_that_is_a_symlink_is_refused(ca_dir, site):
    (site / "home" / "evil").symlink_to(site / "rootonly")
    before = snapshot(site / "rootonly")
    req = request(site, "evil", MALLORY)
    results = issue(ca_dir, req)
    assert snapshot(site / "rootonly") == before
    assert "is a symlink" in results["evil"]["refused"]


def test_home_owned_by_someone_else_is_refused(ca_dir, site):
    req = request(site, "alice", MALLORY)  # alice's home, mallory's files
    assert "belongs to uid %d, not to uid %d" % (ALICE, MALLORY) in issue(ca_dir, req)["alice"]["refused"]
    assert not (site / "home" / "alice" / ".daskhpc").exists()


def test_home_in_a_directory_others_can_write_is_refused(ca_dir, site):
    """If others may rename entries of /home, the home seen now may not be the home written later."""
    os.chmod(site / "home", 0o777)
    assert "writable by others" in issue(ca_dir, request(site, "alice", ALICE))["alice"]["refused"]
    assert not (site / "home" / "alice" / ".daskhpc").exists()


def test_missing_home_is_made_the_users_in_roots_directory(ca_dir, site):
    """As pam_mkhomedir would (the lab's directory users have no home until their first credential)."""
    results = issue(ca_dir, request(site, "newbie", ALICE))
    assert not results["newbie"].get("refused")
    st = os.lstat(site / "home" / "newbie")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (ALICE, 0o700)
    assert os.lstat(site / "home" / "newbie" / ".daskhpc" / "tls" / "user.pem").st_uid == ALICE


def test_missing_home_without_create_dirs_is_refused(ca_dir, site):
    req = request(site, "ghost", ALICE, create_dirs=False)
    assert issue(ca_dir, req)["ghost"]["refused"].endswith("ghost does not exist")
    assert not (site / "home" / "ghost").exists()


def test_home_parents_are_never_created(ca_dir, site):
    req = request(site, "alice", ALICE)
    req = {k: v.replace("/home/", "/nohomes/") if isinstance(v, str) else v for k, v in req.items()}
    results, _records = pki.ensure_certificates(ca_dir, PASS, [req], defaults=DEFAULTS)
    assert results[0]["refused"].endswith("nohomes does not exist")
    assert not (site / "nohomes").exists()


def test_roots_own_symlink_above_the_home_is_followed(ca_dir, site):
    """Sites link /home to a shared file system; only root can have made that link, so it is fine."""
    (site / "homes").symlink_to(site / "home")
    req = request(site, "alice", ALICE)
    req = {k: v.replace("/home/", "/homes/") if isinstance(v, str) else v for k, v in req.items()}
    results, _records = pki.ensure_certificates(ca_dir, PASS, [req], defaults=DEFAULTS)
    assert not results[0].get("refused") and results[0]["changed"]
    assert os.lstat(site / "home" / "alice" / ".daskhpc" / "tls" / "user.pem").st_uid == ALICE


def test_paths_outside_the_home_are_a_configuration_error(ca_dir, site):
    req = request(site, "alice", ALICE, path=str(site / "rootonly" / "user.pem"))
    with pytest.raises(pki.PkiError, match="must lie inside home"):
        issue(ca_dir, req)


# --- races: the user acts between the CA's check and its use ---------------------------------------------


def test_swap_between_check_and_chmod_changes_only_the_users_file(ca_dir, site, monkeypatch):
    """The attack that worked: user.pem swapped for a symlink after the ownership check, root chmods the target."""
    results = issue(ca_dir, request(site, "mallory", MALLORY))
    assert results["mallory"]["changed"]
    pem = site / "home" / "mallory" / ".daskhpc" / "tls" / "user.pem"
    os.chmod(pem, 0o644)  # something to repair
    os.chown(pem, MALLORY, 0)
    real_fchmod = os.fchmod

    def swap_then_fchmod(fd, mode):
        if os.path.lexists(pem) and not os.path.islink(pem):
            os.rename(pem, str(pem) + ".moved")
            as_user(MALLORY, pem, lambda p: p.symlink_to(site / "rootonly" / "shadow"))
        real_fchmod(fd, mode)

    monkeypatch.setattr(safepath.os, "fchmod", swap_then_fchmod)
    before = snapshot(site / "rootonly")
    again = issue(ca_dir, request(site, "mallory", MALLORY))
    assert again["mallory"]["reasons"] == ["file mode or owner"]
    assert snapshot(site / "rootonly") == before
    moved = os.stat(str(pem) + ".moved")  # the file that was checked is the file that was repaired
    assert (moved.st_uid, moved.st_gid, stat.S_IMODE(moved.st_mode)) == (MALLORY, MALLORY, 0o600)


def test_swap_before_rename_moves_only_the_users_link(ca_dir, site, monkeypatch):
    """The user replaces the CA's temporary file with a symlink just before it is renamed into place."""
    real_rename = os.rename
    tls = site / "home" / "mallory" / ".daskhpc" / "tls"

    def swap_then_rename(src, dst, **kwargs):
        if str(tls) in os.readlink("/proc/self/fd/%d" % kwargs["src_dir_fd"]):
            os.unlink(src, dir_fd=kwargs["src_dir_fd"])
            os.symlink(site / "rootonly" / "shadow", src, dir_fd=kwargs["src_dir_fd"])
        real_rename(src, dst, **kwargs)

    monkeypatch.setattr(safepath.os, "rename", swap_then_rename)
    before = snapshot(site / "rootonly")
    issue(ca_dir, request(site, "mallory", MALLORY))
    assert snapshot(site / "rootonly") == before
    assert os.path.islink(tls / "user.pem")  # mallory broke her own credential, nothing else


def test_directory_swapped_for_a_symlink_right_after_mkdir_is_refused(ca_dir, site, monkeypatch):
    real_mkdir = os.mkdir

    def mkdir_then_swap(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, mode, dir_fd=dir_fd)
        if name == "tls":
            os.rmdir(name, dir_fd=dir_fd)
            os.symlink(site / "rootonly", name, dir_fd=dir_fd)

    monkeypatch.setattr(safepath.os, "mkdir", mkdir_then_swap)
    before = snapshot(site / "rootonly")
    results = issue(ca_dir, request(site, "mallory", MALLORY))
    assert snapshot(site / "rootonly") == before
    assert "is a symlink" in results["mallory"]["refused"]


# --- the clean case still works, and is idempotent -----------------------------------------------------


def test_clean_home_gets_its_credential_once(ca_dir, site):
    first = issue(ca_dir, request(site, "alice", ALICE))
    assert_alice_served(site, first)
    assert stat.S_IMODE(os.lstat(site / "home" / "alice" / ".daskhpc").st_mode) == 0o700
    again = issue(ca_dir, request(site, "alice", ALICE))
    assert not again["alice"]["changed"] and again["alice"]["after"]["serial"] == first["alice"]["after"]["serial"]


def test_check_mode_reports_the_refusal_and_writes_nothing(ca_dir, site):
    home = site / "home" / "mallory"
    as_user(MALLORY, home / ".daskhpc", lambda p: p.symlink_to(site / "rootonly"))
    results = issue(ca_dir, request(site, "mallory", MALLORY), check_mode=True)
    assert "is a symlink" in results["mallory"]["refused"]
    assert not os.path.exists(os.path.join(ca_dir, "ledger.jsonl"))
