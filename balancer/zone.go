package balancer

import (
	"context"
	"log/slog"
	"math"
	"time"
)

// Zone preference (WithLocalZone) works like Envoy's priority failover, with
// the local zone as the first priority and every node as the second: the
// picks go to the local zone's nodes while enough of them are healthy, and
// a growing share of them spills over to all nodes as they fail.
//
// The local share is overprovision x the local zone's nodes in rotation /
// the zone's size, at most 1. The size is the most nodes discovery listed in
// the zone within the last zoneMemory: a registry drops a node that fails
// its health check (Consul's critical), and a size that shrank with it
// would keep a failing zone's whole share on its last nodes.

// defaultOverprovision is Envoy's and gRPC's overprovisioning factor: a zone
// keeps all its picks while at least 1/1.4, 72 %, of its nodes are healthy.
const defaultOverprovision = 1.4

// defaultZoneMemory is how long the zone's size remembers nodes that left.
const defaultZoneMemory = 5 * time.Minute

// zoneState is the watch and run goroutines' record of the local zone, under
// the Balancer's mu.
type zoneState struct {
	size   int   // the most nodes listed in the zone lately
	fellAt int64 // mono time the count fell below size; 0 while at it
	mode   zoneMode
	share  float64 // the local share of the last picker
}

type zoneMode uint8

const (
	zoneNone  zoneMode = iota // no preference: no local node in rotation, or none listed, or panic mode
	zoneLocal                 // every pick goes to the local zone
	zoneSpill                 // a share spills over to all nodes
)

// zoneRank orders the modes from good to bad, for noteZone's log level.
var zoneRank = [...]int{zoneLocal: 0, zoneSpill: 1, zoneNone: 2}

func (m zoneMode) String() string {
	return [...]string{"none", "local", "spill"}[m]
}

// preferZone applies WithLocalZone to ready, the picker's nodes in rotation
// (all[e.idx]; the State's order), at now; it lowers next to the time the
// zone's size forgets a node. It returns the entries to pick from and, when
// only a share of the picks stays local, the local entries and that share.
// Called by rebuild, with b.mu held, except in panic mode.
func (b *Balancer) preferZone(ready []entry, all []*node, now int64, next *int64) (out, local []entry, share float64) {
	z, zone := &b.zone, b.opts.zone
	listed := 0
	for i, n := range all {
		in := b.eps[i].Zone == zone
		if in {
			listed++
		}
		if n.local.Load() != in {
			n.local.Store(in)
		}
	}
	switch {
	case listed >= z.size:
		z.size, z.fellAt = listed, 0
	case z.fellAt == 0:
		z.fellAt = now
	case now-z.fellAt >= int64(b.opts.zoneMemory):
		z.size, z.fellAt = listed, 0
	}
	if z.fellAt != 0 {
		*next = min(*next, z.fellAt+int64(b.opts.zoneMemory))
	}
	for _, e := range ready {
		if all[e.idx].local.Load() {
			local = append(local, e)
		}
	}
	if len(local) == 0 {
		return ready, nil, 0
	}
	share = b.opts.overprovision * float64(len(local)) / float64(z.size)
	if share >= 1 {
		return local, nil, 1
	}
	return ready, local, share
}

// noteZone logs a change of zone mode: spilling over is trouble when it
// starts, and its end is good news.
func (b *Balancer) noteZone(mode zoneMode, share float64, localReady int) {
	z := &b.zone
	if z.mode == mode && (mode != zoneSpill || math.Abs(z.share-share) < 0.05) {
		return
	}
	// Worse: local, then spill (less local, worse), then none.
	worse := func(a, b zoneMode) bool { return zoneRank[a] > zoneRank[b] }
	level := slog.LevelInfo
	if worse(mode, z.mode) || mode == zoneSpill && z.mode == zoneSpill && share < z.share {
		level = slog.LevelWarn
	}
	z.mode, z.share = mode, share
	b.opts.logger.Log(context.Background(), level, "balancer: zone preference", "service", b.opts.service,
		"zone", b.opts.zone, "mode", mode.String(), "local_share", share, "local_ready", localReady, "zone_size", z.size)
}

// zoneSel is the selector of a picker whose local zone keeps only a share of
// the picks (zoneSpill): a pick draws whether it stays in the zone, and then
// the local selector or the one over every ready node chooses. A keyed pick
// draws from its key's hash, so a key stays local or spills over always
// while the share holds.
type zoneSel struct {
	local selector // over the local zone's entries of the picker's ready
	at    []int32  // at[j]: the index in the picker's ready of local's j
	all   selector // over the picker's ready
	cut   uint64   // a pick stays local when its draw, 63 random bits, is below cut
}

// zoneKeySalt makes a key's draw independent of the slot Maglev takes from
// the same hash.
const zoneKeySalt = 0x9e3779b97f4a7c15

func (z *zoneSel) first(h uint64, hasKey bool) (int, int64) {
	var r uint64 // 63 random bits
	if hasKey {
		r = mix64(h^zoneKeySalt) >> 1
	} else {
		r = uint64(cheaprand64())
	}
	if r < z.cut {
		if len(z.at) == 1 {
			// The zone's last node: the picker never asks a selector
			// to choose among one node, and P2C cannot (it draws two
			// distinct ones). Its latency is sampled by the picks
			// that spill over to it, and by its probes.
			return int(z.at[0]), 0
		}
		j, since := z.local.first(h, hasKey)
		return int(z.at[j]), since
	}
	return z.all.first(h, hasKey)
}

// newZoneSel builds the zoneSel of a picker over ready whose local entries,
// in ready's order, are local: each policy builds its selector over both,
// and the share becomes the cut.
func (b *Balancer) newZoneSel(ready, local []entry, all []*node, share float64) *zoneSel {
	z := &zoneSel{all: b.opts.policy.build(ready, all, b), cut: uint64(share * (1 << 63)), at: make([]int32, len(local))}
	j := 0
	for i, e := range ready {
		if j < len(local) && e.idx == local[j].idx {
			z.at[j] = int32(i)
			j++
		}
	}
	switch s := z.all.(type) {
	case *maglevSel:
		// The same table: the local selector treats the other zones'
		// nodes as out of rotation, so their keys rehash over the zone.
		z.local = s.over(local)
	case *p2cSel:
		l := b.opts.policy.build(local, all, b).(*p2cSel)
		if s.fresh {
			// One count of the nodes still to probe, whichever selector
			// claims them: the last claim asks for a picker without
			// fresh.
			l.fresh, l.b, l.unprobed = true, b, s.unprobed
		} else {
			l.fresh = false
		}
		z.local = l
	default:
		z.local = b.opts.policy.build(local, all, b)
	}
	return z
}

// mergeByIdx merges a and b, each in the State's order, into one slice in
// that order.
func mergeByIdx(a, b []entry) []entry {
	out := make([]entry, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].idx < b[0].idx {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
