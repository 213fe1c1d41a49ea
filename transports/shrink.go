package transports

import "maps"

// shrinkFloor is the fewest keys a map must have held before Shrink copies it.
const shrinkFloor = 64

// Shrink returns m, or a copy of m once it holds less than a quarter of the most keys it held
// since it was made (tracked in *peak, which the caller keeps beside m under the same lock). Go
// maps never give back the room of deleted keys: without this, a map of channels that once held
// a million keys would keep their room for as long as the process lives. Call it after every
// insert and delete; copying costs at most a third of the deletes since the last copy.
func Shrink[K comparable, V any](m map[K]V, peak *int) map[K]V {
	n := len(m)
	switch {
	case n > *peak:
		*peak = n
	case *peak >= shrinkFloor && n < *peak/4:
		c := make(map[K]V, n)
		maps.Copy(c, m)
		*peak = n
		return c
	}
	return m
}
