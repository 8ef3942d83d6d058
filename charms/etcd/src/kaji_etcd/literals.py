"""Names, paths and numbers of the etcd charm and its workload (constants only).

Machine paths::

    /etc/kaji/etcd/etcd.conf.yml          etcd's config file (JSON, which is YAML)
    /etc/kaji/etcd/pki/ca.crt             the etcd CA certificate
    /etc/kaji/etcd/pki/member.{key,csr,crt}  this member's key, request and certificate
    /opt/kaji/etcd/<version>              etcd and etcdctl (``current`` links the one in use)
    /var/lib/kaji/etcd/data               the data directory (the unit's storage)
    /var/lib/kaji/etcd/member.json        the join record: this member's initial-* settings
    /var/lib/kaji/etcd/retired/<when>     data directories set aside (never deleted)
    /var/lib/kaji/etcd/snapshots/         snapshots taken by the ``snapshot`` action
"""

from __future__ import annotations

# -- Juju names ------------------------------------------------------------------------------
PEER = "cluster"
DB = "db"
CA_SECRET_LABEL = "etcd-ca"  # noqa: S105 - a label, not a secret
ETCD_RESOURCE = "etcd"
SNAPSHOT_RESOURCE = "snapshot"

# -- the service and its files ---------------------------------------------------------------
SERVICE = "etcd"
CONF_DIR = "/etc/kaji/etcd"
PKI_DIR = f"{CONF_DIR}/pki"
CONFIG_FILE = f"{CONF_DIR}/etcd.conf.yml"
CA_FILE = f"{PKI_DIR}/ca.crt"
MEMBER_KEY_NAME = "member"
MEMBER_CERT_FILE = f"{PKI_DIR}/{MEMBER_KEY_NAME}.crt"
MEMBER_KEY_FILE = f"{PKI_DIR}/{MEMBER_KEY_NAME}.key"
INSTALL_NAME = "etcd"
CURRENT_DIR = "/opt/kaji/etcd/current"
DATA_ROOT = "/var/lib/kaji/etcd"
DATA_DIR = f"{DATA_ROOT}/data"
JOIN_RECORD = f"{DATA_ROOT}/member.json"
RETIRED_DIR = f"{DATA_ROOT}/retired"
SNAPSHOT_DIR = f"{DATA_ROOT}/snapshots"
RESTORE_STAGING = f"{DATA_ROOT}/restore-staging"
#: Where a sandbox without etcd records the services it would run.
RECORDED_SERVICES_DIR = "/var/lib/kaji/services"
#: Written once this unit has left the cluster (its member removed, etcd stopped).
DEPARTED_MARKER = f"{DATA_ROOT}/departed"
#: Written once this unit knows it is being removed (it departs, or stop/remove runs): from
#: then on it only leaves, and never writes application data, even while still leader.
LEAVING_MARKER = f"{DATA_ROOT}/leaving"
RECONCILED_FILE = f"{DATA_ROOT}/reconciled.json"

# -- etcd ------------------------------------------------------------------------------------
DEFAULT_VERSION = "3.5.17"
DEFAULT_MIRROR = "https://github.com/etcd-io/etcd/releases/download"
#: Config keys etcd reads only to make a new data directory (ignored once it holds a WAL).
BOOTSTRAP_KEYS = ("initial-cluster", "initial-cluster-state", "initial-cluster-token")
#: The service environment variable holding the digest of the config minus BOOTSTRAP_KEYS.
CONFIG_DIGEST_ENV = "KAJI_CONFIG_DIGEST"
#: A SHA-256 as ``etcd-sha256`` and ``SHA256SUMS`` spell it.
SHA256_HEX = r"[0-9a-f]{64}"

# -- timing and status -----------------------------------------------------------------------
#: A full reconcile runs at least this often even when nothing changed (certificate renewal).
FULL_RECONCILE_INTERVAL = 6 * 3600
#: How long a new learner waits (in its own hook) to catch up and promote itself.
PROMOTE_WAIT = 30.0
#: ``juju status`` names the member certificate's expiry when it is closer than this.
EXPIRY_WARNING_DAYS = 30
RECORDED_NOTE = "etcd not running on this machine: recorded only"
#: At most this many notes (refused or ignored data) are spelled out in the status.
MAX_NOTES = 2
