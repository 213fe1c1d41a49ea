package memory

import "testing"

// TestRemoveSubLeavesNoReference: a subscription taken out of a topic is not left in the array
// behind the slice, where it would stay reachable (and with it its relay and context) for as
// long as the topic lives.
func TestRemoveSubLeavesNoReference(t *testing.T) {
	a, b, c := &funcSub{}, &funcSub{}, &funcSub{}
	for _, gone := range []*funcSub{a, b, c} {
		tp := &topic{subs: []sink{a, b, c}}
		tp.removeSub(gone)
		if len(tp.subs) != 2 {
			t.Fatalf("%d subscriptions left of 3 after removing one", len(tp.subs))
		}
		for i, s := range tp.subs[:cap(tp.subs)] {
			if s == sink(gone) {
				t.Fatalf("the removed subscription is still at index %d of the array (length %d)", i, len(tp.subs))
			}
		}
	}
}
