"""The official Kubernetes Python client (Debian's python3-kubernetes, CustomObjectsApi)
against a running `kos apiserver`.

Run by python_client_test.cc with /usr/bin/python3 (the pyenv python3 first on PATH does not
have the client):

    /usr/bin/python3 python_client_test.py --kubeconfig FILE --expired-rv RV \
        [--etcd-endpoint http://127.0.0.1:PORT] [--watch-window N] [unittest args, e.g. -k X]

--expired-rv is a resourceVersion older than the server's watch window (the driver writes,
then restarts the server, so the window starts after it). With --etcd-endpoint the store is
that etcd, which the tests compact with etcdctl to check 410 on compacted revisions. With
--watch-window N the server was started with --watch-cache-history N.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import unittest

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP = "network.example.com"
VERSION = "v1alpha1"
API_VERSION = GROUP + "/" + VERSION
ARGS = None
WATCH_TIMEOUT = 20  # seconds a watch may take to deliver what a test expects


def subnet(name, vni, cidr, labels=None):
    meta = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": "Subnet", "metadata": meta,
            "spec": {"vni": vni, "ipv4": cidr}}


def attachment(name, subnet_name, node):
    return {"apiVersion": API_VERSION, "kind": "NetworkAttachment", "metadata": {"name": name},
            "spec": {"subnet": subnet_name, "node": node}}


def status_of(exc):
    """The Status object of an ApiException."""
    return json.loads(exc.body)


class KosTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api_client = config.new_client_from_config(config_file=ARGS.kubeconfig)
        cls.api = client.CustomObjectsApi(cls.api_client)

    @classmethod
    def tearDownClass(cls):
        cls.api_client.close()

    def create(self, ns, plural, body):
        return self.api.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)

    def get(self, ns, plural, name):
        return self.api.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)

    def list(self, ns, plural, **kw):
        return self.api.list_namespaced_custom_object(GROUP, VERSION, ns, plural, **kw)

    def patch(self, ns, plural, name, body):
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, ns, plural, name, body)

    def delete(self, ns, plural, name, **kw):
        return self.api.delete_namespaced_custom_object(GROUP, VERSION, ns, plural, name, **kw)

    def assert_api_error(self, fn, code, reason):
        with self.assertRaises(ApiException) as cm:
            fn()
        self.assertEqual(cm.exception.status, code, cm.exception.body)
        st = status_of(cm.exception)
        self.assertEqual(st["kind"], "Status")
        self.assertEqual(st["status"], "Failure")
        self.assertEqual(st["code"], code)
        self.assertEqual(st["reason"], reason, st)
        return st

    def watch_events(self, ns, plural, resource_version, count, timeout=WATCH_TIMEOUT, **kw):
        """The first `count` events of a watch from `resource_version` (fewer if the server
        ends the stream after `timeout` seconds)."""
        w = watch.Watch()
        events = []
        for e in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, ns, plural,
                          resource_version=resource_version, timeout_seconds=timeout, **kw):
            events.append(e)
            if len(events) == count:
                w.stop()
        return events

    @staticmethod
    def summary(events):
        return [(e["type"], e["raw_object"]["metadata"]["name"]) for e in events]


class CrudTest(KosTestCase):
    NS = "py-crud"

    def test_create_get_list_patch_delete(self):
        created = self.create(self.NS, "subnets", subnet("s1", 11, "10.11.0.0/16", {"app": "py"}))
        self.assertEqual(created["kind"], "Subnet")
        self.assertEqual(created["apiVersion"], API_VERSION)
        meta = created["metadata"]
        self.assertEqual(meta["name"], "s1")
        self.assertEqual(meta["namespace"], self.NS)
        self.assertEqual(len(meta["uid"]), 36)
        self.assertRegex(meta["resourceVersion"], r"^[1-9][0-9]*$")
        self.assertEqual(meta["generation"], 1)
        self.assertRegex(meta["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(created["spec"], {"vni": 11, "ipv4": "10.11.0.0/16"})
        self.create(self.NS, "subnets", subnet("s2", 12, "10.12.0.0/16", {"app": "other"}))
        na = self.create(self.NS, "networkattachments", attachment("na1", "s1", "node1"))
        self.assertEqual(na["spec"], {"subnet": "s1", "node": "node1"})

        got = self.get(self.NS, "subnets", "s1")
        self.assertEqual(got["metadata"]["uid"], meta["uid"])
        self.assertEqual(got["metadata"]["resourceVersion"], meta["resourceVersion"])

        # list: namespaced, all namespaces, by label, by field
        lst = self.list(self.NS, "subnets")
        self.assertEqual(lst["kind"], "SubnetList")
        self.assertEqual(lst["apiVersion"], API_VERSION)
        self.assertRegex(lst["metadata"]["resourceVersion"], r"^[1-9][0-9]*$")
        self.assertEqual([o["metadata"]["name"] for o in lst["items"]], ["s1", "s2"])
        everywhere = self.api.list_cluster_custom_object(GROUP, VERSION, "subnets")
        self.assertIn(("py-crud", "s1"), [(o["metadata"]["namespace"], o["metadata"]["name"])
                                          for o in everywhere["items"]])
        by_label = self.list(self.NS, "subnets", label_selector="app=py")
        self.assertEqual([o["metadata"]["name"] for o in by_label["items"]], ["s1"])
        by_field = self.list(self.NS, "subnets", field_selector="spec.vni=12")
        self.assertEqual([o["metadata"]["name"] for o in by_field["items"]], ["s2"])
        nas = self.list(self.NS, "networkattachments", field_selector="spec.node=node1")
        self.assertEqual([o["metadata"]["name"] for o in nas["items"]], ["na1"])
        self.assert_api_error(
            lambda: self.list(self.NS, "subnets", field_selector="spec.nothing=1"), 400,
            "BadRequest")

        # patch (merge patch): metadata, then spec
        patched = self.patch(self.NS, "subnets", "s1", {"metadata": {"labels": {"tier": "gold"}}})
        self.assertEqual(patched["metadata"]["labels"], {"app": "py", "tier": "gold"})
        self.assertEqual(patched["metadata"]["generation"], 1)
        self.assertGreater(int(patched["metadata"]["resourceVersion"]),
                           int(meta["resourceVersion"]))
        patched = self.patch(self.NS, "networkattachments", "na1",
                             {"spec": {"postDeleteExec": ["/bin/echo", "bye"]}})
        self.assertEqual(patched["spec"]["postDeleteExec"], ["/bin/echo", "bye"])
        self.assertEqual(patched["metadata"]["generation"], 2)
        patched = self.patch(self.NS, "subnets", "s1", {"metadata": {"labels": {"tier": None}}})
        self.assertEqual(patched["metadata"]["labels"], {"app": "py"})

        # status subresource
        st = self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.NS, "subnets", "s1", {"status": {"validated": True}})
        self.assertEqual(st["status"], {"validated": True})
        self.assertEqual(self.get(self.NS, "subnets", "s1")["status"], {"validated": True})

        # delete: gone afterwards
        self.delete(self.NS, "subnets", "s2")
        self.assert_api_error(lambda: self.get(self.NS, "subnets", "s2"), 404, "NotFound")
        lst = self.list(self.NS, "subnets")
        self.assertEqual([o["metadata"]["name"] for o in lst["items"]], ["s1"])

    def test_error_statuses(self):
        self.create(self.NS, "subnets", subnet("e1", 21, "10.21.0.0/16"))
        st = self.assert_api_error(
            lambda: self.create(self.NS, "subnets", subnet("e1", 22, "10.22.0.0/16")), 409,
            "AlreadyExists")
        self.assertEqual(st["message"], 'subnets.network.example.com "e1" already exists')
        self.assertEqual(st["details"]["name"], "e1")
        self.assertEqual(st["details"]["group"], GROUP)
        self.assertEqual(st["details"]["kind"], "subnets")

        # a stale update
        cur = self.get(self.NS, "subnets", "e1")
        self.patch(self.NS, "subnets", "e1", {"metadata": {"labels": {"v": "2"}}})
        cur["metadata"]["labels"] = {"v": "stale"}
        st = self.assert_api_error(
            lambda: self.api.replace_namespaced_custom_object(GROUP, VERSION, self.NS, "subnets",
                                                              "e1", cur), 409, "Conflict")
        self.assertIn("the object has been modified; please apply your changes to the latest "
                      "version and try again", st["message"])
        self.assertEqual(self.get(self.NS, "subnets", "e1")["metadata"]["labels"], {"v": "2"})

        # invalid: VNI out of range, overlap, immutable field
        st = self.assert_api_error(
            lambda: self.create(self.NS, "subnets", subnet("e2", 2097152, "10.23.0.0/16")), 422,
            "Invalid")
        self.assertEqual(st["details"]["name"], "e2")
        self.assertEqual(st["details"]["causes"],
                         [{"reason": "FieldValueInvalid", "field": "spec.vni",
                           "message": "Invalid value: 2097152: must be in the range 1..2097151"}])
        st = self.assert_api_error(
            lambda: self.create(self.NS, "subnets", subnet("e3", 21, "10.21.128.0/17")), 422,
            "Invalid")
        self.assertEqual([c["field"] for c in st["details"]["causes"]], ["spec.ipv4"])
        st = self.assert_api_error(
            lambda: self.patch(self.NS, "subnets", "e1", {"spec": {"ipv4": "10.24.0.0/16"}}), 422,
            "Invalid")
        self.assertEqual(st["details"]["causes"],
                         [{"reason": "FieldValueInvalid", "field": "spec.ipv4",
                           "message": 'Invalid value: "10.24.0.0/16": field is immutable'}])

        st = self.assert_api_error(lambda: self.get(self.NS, "subnets", "nope"), 404, "NotFound")
        self.assertEqual(st["message"], 'subnets.network.example.com "nope" not found')
        self.assert_api_error(lambda: self.delete(self.NS, "subnets", "nope"), 404, "NotFound")
        self.assert_api_error(
            lambda: self.patch(self.NS, "subnets", "nope", {"metadata": {"labels": {"a": "b"}}}),
            404, "NotFound")

    def test_invalid_status_names_the_kind(self):
        # Kubernetes: NewInvalid(GroupKind{network.example.com, Subnet}, ...) puts the kind
        # in details.kind; kubectl prints 'The Subnet "x" is invalid: ...' from it.
        st = self.assert_api_error(
            lambda: self.create(self.NS, "subnets", subnet("k2", 0, "10.25.0.0/16")), 422,
            "Invalid")
        self.assertEqual(st["details"]["kind"], "Subnet")
        self.assertEqual(st["details"]["group"], GROUP)
        self.assertTrue(st["message"].startswith('Subnet.network.example.com "k2" is invalid: '),
                        st["message"])

    def test_delete_returns_status_success(self):
        # A custom resource deleted at once (no finalizers): Kubernetes answers 200 with
        # Status{status: Success, details: {name, group, kind: <resource>, uid}}.
        made = self.create(self.NS, "subnets", subnet("d1", 31, "10.31.0.0/16"))
        resp = self.delete(self.NS, "subnets", "d1")
        self.assertEqual(resp.get("kind"), "Status", resp)
        self.assertEqual(resp.get("status"), "Success", resp)
        self.assertEqual(resp["details"]["name"], "d1")
        self.assertEqual(resp["details"]["kind"], "subnets")
        self.assertEqual(resp["details"]["uid"], made["metadata"]["uid"])

    def test_delete_with_finalizer_and_preconditions(self):
        body = subnet("f1", 41, "10.41.0.0/16")
        body["metadata"]["finalizers"] = ["example.com/hold"]
        made = self.create(self.NS, "subnets", body)
        # A uid precondition that does not match: Conflict, nothing happens.
        self.assert_api_error(
            lambda: self.delete(self.NS, "subnets", "f1",
                                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                                    uid="00000000-0000-4000-8000-000000000000"))),
            409, "Conflict")
        self.assertNotIn("deletionTimestamp", self.get(self.NS, "subnets", "f1")["metadata"])
        # The finalizer keeps the object, marked.
        resp = self.delete(self.NS, "subnets", "f1", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=made["metadata"]["uid"])))
        self.assertIn("deletionTimestamp", resp["metadata"], resp)
        still = self.get(self.NS, "subnets", "f1")
        self.assertIn("deletionTimestamp", still["metadata"])
        # Removing it lets the object go.
        self.patch(self.NS, "subnets", "f1", {"metadata": {"finalizers": None}})
        self.assert_api_error(lambda: self.get(self.NS, "subnets", "f1"), 404, "NotFound")


    def test_list_from_a_future_resource_version_is_too_large(self):
        # Kubernetes waits up to 3 s for the cache to reach the version, then answers 504
        # Timeout "Too large resource version: N, current: M" (cause ResourceVersionTooLarge),
        # never a list older than asked for.
        rv = int(self.list(self.NS, "subnets")["metadata"]["resourceVersion"])
        st = self.assert_api_error(
            lambda: self.list(self.NS, "subnets", resource_version=str(rv + 1000000)), 504,
            "Timeout")
        self.assertIn("Too large resource version", st["message"])


class PagingTest(KosTestCase):
    NS = "py-page"

    def test_limit_and_continue(self):
        for i in range(5):
            self.create(self.NS, "subnets", subnet("p%d" % i, 50 + i, "10.%d.0.0/16" % (50 + i)))
        names, token, rvs, pages = [], None, set(), 0
        while True:
            kw = {"limit": 2}
            if token:
                kw["_continue"] = token
            page = self.list(self.NS, "subnets", **kw)
            pages += 1
            self.assertLessEqual(len(page["items"]), 2)
            names += [o["metadata"]["name"] for o in page["items"]]
            rvs.add(page["metadata"]["resourceVersion"])
            token = page["metadata"].get("continue")
            if not token:
                break
        self.assertEqual(names, ["p0", "p1", "p2", "p3", "p4"])
        self.assertEqual(pages, 3)
        self.assertEqual(len(rvs), 1, "the pages of one list are one snapshot")
        self.assert_api_error(lambda: self.list(self.NS, "subnets", _continue="garbage!"), 400,
                              "BadRequest")


class WatchTest(KosTestCase):
    NS = "py-watch"

    def test_watch_resumes_from_a_resource_version(self):
        self.create(self.NS, "subnets", subnet("before", 61, "10.61.0.0/16"))
        rv0 = self.list(self.NS, "subnets")["metadata"]["resourceVersion"]
        a = self.create(self.NS, "subnets", subnet("w1", 62, "10.62.0.0/16"))
        m = self.patch(self.NS, "subnets", "w1", {"metadata": {"labels": {"step": "2"}}})
        self.delete(self.NS, "subnets", "w1")

        events = self.watch_events(self.NS, "subnets", rv0, 3)
        self.assertEqual(self.summary(events),
                         [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")])
        rvs = [e["raw_object"]["metadata"]["resourceVersion"] for e in events]
        self.assertEqual(rvs[0], a["metadata"]["resourceVersion"])
        self.assertEqual(rvs[1], m["metadata"]["resourceVersion"])
        self.assertGreater(int(rvs[2]), int(rvs[1]))
        self.assertEqual(events[1]["raw_object"]["metadata"]["labels"], {"step": "2"})

        # Resuming from the ADDED event's version: exactly what came after it.
        events = self.watch_events(self.NS, "subnets", rvs[0], 2)
        self.assertEqual(self.summary(events), [("MODIFIED", "w1"), ("DELETED", "w1")])
        self.assertEqual([e["raw_object"]["metadata"]["resourceVersion"] for e in events], rvs[1:])

        # From the last one: nothing old is repeated; the next change comes first.
        self.create(self.NS, "subnets", subnet("w2", 63, "10.63.0.0/16"))
        events = self.watch_events(self.NS, "subnets", rvs[2], 1)
        self.assertEqual(self.summary(events), [("ADDED", "w2")])

        # resourceVersion "0": the current state as ADDED events.
        events = self.watch_events(self.NS, "subnets", "0", 2)
        self.assertEqual(sorted(self.summary(events)), [("ADDED", "before"), ("ADDED", "w2")])

    def test_watch_streams_live_changes_with_selectors(self):
        rv = self.list(self.NS, "networkattachments")["metadata"]["resourceVersion"]
        got = []

        def run():
            got.extend(self.watch_events(self.NS, "networkattachments", rv, 3,
                                         field_selector="spec.node=n1"))

        t = threading.Thread(target=run)
        t.start()
        self.create(self.NS, "networkattachments", attachment("a1", "s", "n1"))
        self.create(self.NS, "networkattachments", attachment("a2", "s", "n2"))
        self.patch(self.NS, "networkattachments", "a1", {"metadata": {"labels": {"x": "y"}}})
        self.patch(self.NS, "networkattachments", "a2", {"metadata": {"labels": {"x": "y"}}})
        self.delete(self.NS, "networkattachments", "a1")
        t.join(WATCH_TIMEOUT + 5)
        self.assertFalse(t.is_alive())
        self.assertEqual(self.summary(got), [("ADDED", "a1"), ("MODIFIED", "a1"), ("DELETED", "a1")])

    def test_watch_from_an_expired_resource_version_is_410(self):
        # The client raises the ERROR event's Status as an ApiException.
        with self.assertRaises(ApiException) as cm:
            self.watch_events(self.NS, "subnets", ARGS.expired_rv, 1, timeout=5)
        self.assertEqual(cm.exception.status, 410)
        self.assertIn("Expired", cm.exception.reason)
        # On the wire: 200, then one ERROR event carrying a 410 Status.
        resp = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.NS, "subnets", watch=True, resource_version=ARGS.expired_rv,
            timeout_seconds=5, _preload_content=False)
        try:
            self.assertEqual(resp.status, 200)
            lines = [l for l in resp.data.decode().split("\n") if l]
        finally:
            resp.release_conn()
        self.assertEqual(len(lines), 1, lines)
        ev = json.loads(lines[0])
        self.assertEqual(ev["type"], "ERROR")
        st = ev["object"]
        self.assertEqual((st["kind"], st["status"], st["code"], st["reason"]),
                         ("Status", "Failure", 410, "Expired"), st)
        self.assertIn("too old resource version", st["message"])


@unittest.skipUnless("--watch-window" in sys.argv,
                     "needs a server with a small watch window (--watch-window)")
class WindowTest(KosTestCase):
    NS = "py-window"

    def test_watch_older_than_the_window_is_410(self):
        # The server keeps the last N events per resource (kos apiserver
        # --watch-cache-history N); a watch from before them gets 410, as Kubernetes does for
        # a resourceVersion its watch cache no longer holds.
        n = ARGS.watch_window
        rvs = [self.create(self.NS, "networkattachments",
                           attachment("a", "s", "n1"))["metadata"]["resourceVersion"]]
        for i in range(2 * n):
            rvs.append(self.patch(self.NS, "networkattachments", "a",
                                  {"metadata": {"labels": {"i": str(i)}}})
                       ["metadata"]["resourceVersion"])
        with self.assertRaises(ApiException) as cm:
            self.watch_events(self.NS, "networkattachments", rvs[0], 1, timeout=5)
        self.assertEqual(cm.exception.status, 410)
        self.assertIn("too old resource version", cm.exception.reason)
        # Within the window: exactly the newer events.
        events = self.watch_events(self.NS, "networkattachments", rvs[-2], 1)
        self.assertEqual(self.summary(events), [("MODIFIED", "a")])
        self.assertEqual(events[0]["raw_object"]["metadata"]["resourceVersion"], rvs[-1])
        self.assertEqual(events[0]["raw_object"]["metadata"]["labels"], {"i": str(2 * n - 1)})


@unittest.skipUnless(os.environ.get("KOS_TEST_ETCD_ENDPOINT") or "--etcd-endpoint" in sys.argv,
                     "needs the etcd under the server (--etcd-endpoint)")
class CompactionTest(KosTestCase):
    NS = "py-compact"

    def etcd_revision(self):
        out = subprocess.run(["etcdctl", "--endpoints=" + ARGS.etcd_endpoint, "endpoint",
                              "status", "-w", "json"], check=True, capture_output=True,
                             env=dict(os.environ, ETCDCTL_API="3")).stdout
        return json.loads(out)[0]["Status"]["header"]["revision"]

    def compact(self):
        rev = self.etcd_revision()
        subprocess.run(["etcdctl", "--endpoints=" + ARGS.etcd_endpoint, "compact", str(rev)],
                       check=True, capture_output=True, env=dict(os.environ, ETCDCTL_API="3"))
        return rev

    def test_continue_token_of_a_compacted_revision_is_410(self):
        for i in range(3):
            self.create(self.NS, "subnets", subnet("c%d" % i, 70 + i, "10.%d.0.0/16" % (70 + i)))
        page = self.list(self.NS, "subnets", limit=1)
        token = page["metadata"]["continue"]
        self.assertTrue(token)
        self.create(self.NS, "subnets", subnet("c9", 79, "10.79.0.0/16"))  # a newer revision
        self.compact()
        st = self.assert_api_error(lambda: self.list(self.NS, "subnets", limit=1, _continue=token),
                                   410, "Expired")
        self.assertIn("continue parameter is too old", st["message"])
        # A fresh list works.
        names = [o["metadata"]["name"] for o in self.list(self.NS, "subnets")["items"]]
        self.assertEqual(names, ["c0", "c1", "c2", "c9"])

    def test_exact_list_at_a_compacted_revision_is_410(self):
        old = self.create(self.NS, "subnets", subnet("x1", 81, "10.81.0.0/16"))
        self.create(self.NS, "subnets", subnet("x2", 82, "10.82.0.0/16"))
        self.compact()
        self.assert_api_error(
            lambda: self.list(self.NS, "subnets", resource_version=old["metadata"]["resourceVersion"],
                              resource_version_match="Exact"), 410, "Expired")


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--expired-rv", required=True)
    parser.add_argument("--etcd-endpoint", default="")
    parser.add_argument("--watch-window", type=int, default=0)
    ARGS, rest = parser.parse_known_args()
    if ARGS.etcd_endpoint:
        os.environ["KOS_TEST_ETCD_ENDPOINT"] = ARGS.etcd_endpoint
    prog = unittest.main(argv=[sys.argv[0]] + rest, verbosity=2, exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
