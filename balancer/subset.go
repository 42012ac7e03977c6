package balancer

import "slices"

// subset returns the k entries of ready whose nodes (all[e.idx]) rank
// highest, in their order in ready, and the lowest rank among them: the
// subset of WithSubset, taken by rebuild from the nodes in rotation (or, in
// panic mode, from all but those whose breaker is open). len(ready) > k > 0.
// It filters ready in place.
//
// Ranking by a hash of each address and a per-Balancer salt is rendezvous
// hashing, as in gRPC's random_subsetting proposal (gRFC A68): every
// client's subset is an independent, uniform choice of k nodes, and a node
// that comes, goes, or leaves rotation moves at most one node in or out.
// The cost is one pass over ready with a sorted list of the k highest
// ranks, which a node enters about k x ln(len(ready)/k) times in all.
func subset(ready []entry, all []*node, k int) ([]entry, uint64) {
	top := make([]uint64, 0, k) // the highest ranks so far, ascending
	for _, e := range ready {
		r := all[e.idx].rank
		switch {
		case len(top) < k:
			i, _ := slices.BinarySearch(top, r)
			top = slices.Insert(top, i, r)
		case r > top[0]:
			// r displaces the lowest: the ranks below its place
			// move down one.
			i, _ := slices.BinarySearch(top, r)
			copy(top[:i-1], top[1:i])
			top[i-1] = r
		}
	}
	floor := top[0]
	kept := ready[:0]
	for _, e := range ready {
		if all[e.idx].rank >= floor {
			kept = append(kept, e)
		}
	}
	return kept, floor
}
