"""Issue N user certificates: onprem.daskhpc.certificate_batch against the community.crypto ownca flow.

Both sides run through ansible-playbook on localhost, against the same issuing CA:

* certificate_batch: N user certificates in one task, then the same task again (nothing to do).
* community.crypto: per certificate openssl_privatekey + openssl_csr_pipe + x509_certificate_pipe
  (provider ownca) + copy (the pipe module returns the certificate; copy writes it), for a sample
  of --sample certificates, scaled linearly to N.

community.crypto is not a dependency: the script downloads the `ansible` wheel from PyPI with pip
(it bundles community.crypto) into /tmp/daskhpc-bench and extracts only that collection.

    .venv/bin/python bench/bench_certificates.py [--count 10000] [--sample 200]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/daskhpc-bench")
PASSPHRASE = "bench passphrase not secret"


def community_crypto():
    """Path of a collections dir holding community.crypto, from the `ansible` wheel on PyPI."""
    target = WORK / "collections"
    if (target / "ansible_collections" / "community" / "crypto").is_dir():
        return target
    wheels = WORK / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(wheels / "ansible-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                        "ansible>=12,<13"], check=True)
    wheel = sorted(glob.glob(str(wheels / "ansible-*.whl")))[-1]
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith("ansible_collections/community/crypto/")]
        archive.extractall(target, members)
    return target


def run_playbook(text, workdir, extra_collections=None):
    book = Path(workdir) / ("play-%d.yml" % time.monotonic_ns())
    book.write_text(text)
    paths = [str(REPO / ".collections")] + ([str(extra_collections)] if extra_collections else [])
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=":".join(paths),
               PATH="%s:%s" % (REPO / ".venv" / "bin", os.environ["PATH"]), ANSIBLE_NOCOLOR="1")
    start = time.perf_counter()
    out = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local",
                          "-e", "ansible_python_interpreter=%s" % (REPO / ".venv" / "bin" / "python"), str(book)],
                         env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit("playbook failed:\n" + out.stdout[-3000:] + out.stderr[-2000:])
    recap = re.search(r"changed=(\d+)", out.stdout)
    return elapsed, int(recap.group(1)) if recap else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="certificates to issue with certificate_batch")
    parser.add_argument("--sample", type=int, default=200, help="certificates to issue with community.crypto")
    args = parser.parse_args(argv)
    collections = community_crypto()
    with tempfile.TemporaryDirectory(prefix="bench-certs-") as tmp:
        tmp = Path(tmp)
        ca = tmp / "ca"
        setup = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: CA
      onprem.daskhpc.ca: {ca_dir: "%s", name: bench CA, passphrase: "%s"}
""" % (ca, PASSPHRASE)
        run_playbook(setup, tmp)
        empty, _output = run_playbook(
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: start-up}\n", tmp)

        users = [{"path": "%s/batch/u%d/user.pem" % (tmp, i), "subject": {"CN": "u%d" % i}}
                 for i in range(args.count)]
        (tmp / "users.json").write_text(json.dumps({"bench_users": users}))
        batch = """
- hosts: localhost
  gather_facts: false
  vars_files: ["%s/users.json"]
  tasks:
    - name: All users at once
      onprem.daskhpc.certificate_batch:
        ca_dir: "%s"
        ca_passphrase: "%s"
        defaults: {profile: user, days: 7, renew_before_days: 2, create_dirs: true}
        certificates: "{{ bench_users }}"
""" % (tmp, ca, PASSPHRASE)
        batch_first, changed = run_playbook(batch, tmp)
        assert changed == 1, changed
        batch_again, changed = run_playbook(batch, tmp)
        assert changed == 0, changed
        issued = len(list((tmp / "batch").glob("u*/user.pem")))
        assert issued == args.count, issued

        flow = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Key
      community.crypto.openssl_privatekey:
        path: "%(tmp)s/cc/u{{ item }}.key"
        type: ECC
        curve: secp256r1
      loop: "{{ range(%(n)d) | list }}"
    - name: CSR
      community.crypto.openssl_csr_pipe:
        privatekey_path: "%(tmp)s/cc/u{{ item }}.key"
        common_name: "u{{ item }}"
        organizational_unit_name: users
        extended_key_usage: [clientAuth, serverAuth]
      loop: "{{ range(%(n)d) | list }}"
      register: csrs
    - name: Certificate
      community.crypto.x509_certificate_pipe:
        csr_content: "{{ item.csr }}"
        provider: ownca
        ownca_path: "%(ca)s/intermediate.pem"
        ownca_privatekey_path: "%(ca)s/intermediate.key"
        ownca_privatekey_passphrase: "%(pw)s"
        ownca_not_after: +7d
      loop: "{{ csrs.results }}"
      loop_control: {label: "{{ item.item }}"}
      register: certs
    - name: Write
      ansible.builtin.copy:
        content: "{{ item.certificate }}"
        dest: "%(tmp)s/cc/u{{ item.item.item }}.pem"
        mode: "0644"
      loop: "{{ certs.results }}"
      loop_control: {label: "{{ item.item.item }}"}
""" % {"tmp": tmp, "n": args.sample, "ca": ca, "pw": PASSPHRASE}
        (tmp / "cc").mkdir()
        cc_time, _output = run_playbook(flow, tmp, collections)
        cc_issued = len(list((tmp / "cc").glob("u*.pem")))
        assert cc_issued == args.sample, cc_issued

    per_batch = (batch_first - empty) / args.count
    per_cc = (cc_time - empty) / args.sample
    scaled = empty + per_cc * args.count
    print("ansible-playbook start-up (empty play):           %8.2f s" % empty)
    print("certificate_batch, %6d certificates (1 task):   %8.2f s  (%.2f ms per certificate)"
          % (args.count, batch_first, per_batch * 1000))
    print("certificate_batch, %6d again (nothing to do):   %8.2f s" % (args.count, batch_again))
    print("community.crypto,  %6d certificates (4 tasks):  %8.2f s  (%.0f ms per certificate)"
          % (args.sample, cc_time, per_cc * 1000))
    print("community.crypto scaled to %6d:                 %8.0f s  (%.1f h)" % (args.count, scaled, scaled / 3600))
    print("ratio per certificate (community.crypto / batch):  %8.0fx" % (per_cc / per_batch))
    print("ratio for %d certificates, wall time:          %8.0fx" % (args.count, scaled / batch_first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
