// kv-provisioner: a dynamic volume provisioner for a one-node cluster. Each PersistentVolumeClaim
// of a StorageClass naming this provisioner gets a directory of its own under --root, bound as a
// hostPath PersistentVolume pinned to the node; a released volume whose reclaim policy is Delete
// has its directory removed. It follows the external-provisioner protocol (the PV controller's
// storage-provisioner annotation, WaitForFirstConsumer's selected-node annotation), polling the
// API server once a second.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	annProvisioner  = "volume.kubernetes.io/storage-provisioner"
	annBetaProv     = "volume.beta.kubernetes.io/storage-provisioner"
	annSelectedNode = "volume.kubernetes.io/selected-node"
	annProvisioned  = "pv.kubernetes.io/provisioned-by"
	annDir          = "kvstore.invalid/directory"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	name := flag.String("name", "kvstore.invalid/hostpath", "provisioner name (StorageClass .provisioner)")
	root := flag.String("root", "/var/lib/kv-provisioner", "directory holding one directory per volume")
	node := flag.String("node", "", "the node's name (the PVs' node affinity)")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	if err := os.MkdirAll(*root, 0o755); err != nil {
		log.Fatal(err)
	}
	p := &provisioner{client: client, name: *name, root: *root, node: *node}
	log.Printf("provisioner %s: volumes under %s on node %s", p.name, p.root, p.node)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := p.round(ctx); err != nil {
			log.Printf("round: %v", err)
		}
		cancel()
		time.Sleep(time.Second)
	}
}

type provisioner struct {
	client kubernetes.Interface
	name   string
	root   string
	node   string
}

func (p *provisioner) round(ctx context.Context) error {
	classes, err := p.client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ours := map[string]*storagev1.StorageClass{}
	for i := range classes.Items {
		if classes.Items[i].Provisioner == p.name {
			ours[classes.Items[i].Name] = &classes.Items[i]
		}
	}
	claims, err := p.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		pvc := &claims.Items[i]
		if pvc.Spec.VolumeName != "" || pvc.Status.Phase != v1.ClaimPending || pvc.DeletionTimestamp != nil {
			continue
		}
		wanted := pvc.Annotations[annProvisioner]
		if wanted == "" {
			wanted = pvc.Annotations[annBetaProv]
		}
		if wanted != p.name || pvc.Spec.StorageClassName == nil {
			continue
		}
		class := ours[*pvc.Spec.StorageClassName]
		if class == nil {
			continue
		}
		if class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
			if pvc.Annotations[annSelectedNode] == "" {
				continue
			}
		}
		if err := p.provision(ctx, pvc, class); err != nil {
			log.Printf("provision %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	volumes, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[annProvisioned] != p.name || pv.Status.Phase != v1.VolumeReleased {
			continue
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
			continue
		}
		dir := pv.Annotations[annDir]
		if dir != "" && strings.HasPrefix(dir, p.root+"/") {
			if err := os.RemoveAll(dir); err != nil {
				log.Printf("delete %s: %v", dir, err)
				continue
			}
		}
		err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			log.Printf("delete PV %s: %v", pv.Name, err)
			continue
		}
		log.Printf("deleted %s and %s", pv.Name, dir)
	}
	return nil
}

func (p *provisioner) provision(ctx context.Context, pvc *v1.PersistentVolumeClaim, class *storagev1.StorageClass) error {
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(p.root, fmt.Sprintf("%s_%s_%s", pvc.Namespace, pvc.Name, pvc.UID))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	// The pod's user owns nothing on the host: the directory is open to it, as a fresh
	// volume would be to a pod's fsGroup.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	hostPathType := v1.HostPathDirectory
	node := pvc.Annotations[annSelectedNode]
	if node == "" {
		node = p.node
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{annProvisioned: p.name, annDir: dir},
		},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: pvc.Spec.Resources.Requests[v1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &v1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion,
			},
			PersistentVolumeSource: v1.PersistentVolumeSource{
				HostPath: &v1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{
				NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: v1.NodeSelectorOpIn, Values: []string{node},
				}}}},
			}},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		log.Printf("provisioned %s for %s/%s at %s", name, pvc.Namespace, pvc.Name, dir)
	}
	return err
}
