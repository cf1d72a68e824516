// libcni-harness: drives a CNI network list through libcni, the library containerd and
// CRI-O call, as they do: AddNetworkList / CheckNetworkList / DelNetworkList with the
// result cache. Built offline from Debian's golang-github-appc-cni-dev in GOPATH mode.
//
//	libcni-harness add|check|del CONFLIST CONTAINER_ID NETNS IFNAME
//
// CNI_PATH lists the plugin directories; KOS_CNI_CACHE_DIR is libcni's cache directory.
// add prints the chain's final Result as JSON. Any error: its text on stderr, exit 1 (with
// the CNI error code as "code=N" when the plugin returned one).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func die(err error) {
	if e, ok := err.(*types.Error); ok {
		fmt.Fprintf(os.Stderr, "code=%d msg=%s details=%s\n", e.Code, e.Msg, e.Details)
	} else {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
	}
	os.Exit(1)
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: libcni-harness add|check|del CONFLIST CONTAINER_ID NETNS IFNAME")
		os.Exit(2)
	}
	op, file, id, netns, ifname := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	list, err := libcni.ConfListFromFile(file)
	if err != nil {
		die(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("KOS_CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", id}}}
	ctx := context.Background()
	switch op {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			die(err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			die(err)
		}
		fmt.Println(string(b))
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			die(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			die(err)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown operation", op)
		os.Exit(2)
	}
}
