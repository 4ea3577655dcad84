// Template revisions as the page sees them: each pod reports its own (KV_REVISION, from the
// label controller-revision-hash on Kubernetes). The newest revision is the one being rolled
// out; a pod at another one is still to be rolled. Used by app.js.
"use strict";

const revisionsSeen = []; // in the order first seen; the last is the newest

function newestRevision() {
  return revisionsSeen[revisionsSeen.length - 1] || null;
}

// A revision seen for the first time becomes the newest, and so does one a pod has just moved
// to (a rollback moves pods to an older revision). Pods are looked at from the lowest ordinal
// up, so a rollout caught half done (it goes from the highest ordinal down) ends at the newer
// one. True if the revision was never seen before.
function seeRevision(revision, moved) {
  const known = revisionsSeen.includes(revision);
  if (known && !(moved && revision !== newestRevision())) return false;
  if (known) revisionsSeen.splice(revisionsSeen.indexOf(revision), 1);
  revisionsSeen.push(revision);
  return !known;
}

// Whether this pod is still to be rolled to the newest revision.
function isRolling(pod) {
  const newest = newestRevision();
  return Boolean(pod.revision && newest && pod.revision !== newest && pod.state !== "gone");
}

// The line below the table: the newest revision, on how many pods, and which pods are still
// to be rolled, in the order a rolling update takes them (highest ordinal first); null before
// any pod has reported a revision. `pods` are sorted by ordinal.
function describeRollout(pods) {
  const newest = newestRevision();
  const live = pods.filter((p) => p.state !== "gone" && p.revision);
  if (!newest || !live.length) return null;
  const behind = live.filter((p) => p.revision !== newest).reverse();
  if (!behind.length) return { rolling: false, text: `All ${live.length} pods at revision ${newest}` };
  const names = behind.map((p) => p.name).join(", ");
  const done = live.length - behind.length;
  return {
    rolling: true,
    text: `Rolling out ${newest}: ${done} of ${live.length} pods updated; still to roll: ${names}`,
  };
}
