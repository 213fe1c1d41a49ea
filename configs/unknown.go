package configs

import (
	"reflect"
	"sort"
	"strings"

	"github.com/agnivade/levenshtein"
)

// UnknownVariable is a GATEWAY_* environment variable that names no setting (Load ignores it).
type UnknownVariable struct {
	Name       string // the variable, e.g. GATEWAY_REDIS_ADRESS
	Suggestion string // the closest known variable, "" when none is close
}

// UnknownVariables lists, in name order, the GATEWAY_* variables of environ that are not
// settings, usually typos. The known names come from the env tags of Config (as Load reads them).
func UnknownVariables(environ []string) []UnknownVariable {
	known := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), EnvPrefix, "", known)
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	var out []UnknownVariable
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) || known[k] != "" {
			continue
		}
		out = append(out, UnknownVariable{Name: k, Suggestion: closest(k, names)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// closest is the candidate nearest to s by edit distance (ties: the first in name order), ""
// when none is within half the length of s (at least 2, at most 4 edits).
func closest(s string, candidates []string) string {
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted)
	best, bestD := "", min(4, max(2, len(s)/2))+1
	for _, c := range sorted {
		if d := levenshtein.ComputeDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}
