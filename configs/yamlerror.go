package configs

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlLine is the "line N: rest" of the YAML decoder's messages.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// unknownField is the YAML decoder's message for a key that is not a setting.
var unknownField = regexp.MustCompile(`^field (\S+) not found in type `)

// yamlError turns an error of the YAML decoder into one line that names the key at fault: a
// *KeyError for a value of the wrong type, "unknown key" with the closest known key for a
// misspelt one, and, for a syntax error, the line and its key, never its value (the decoder reports parser
// errors one line too early: yaml.v3 prints the 0-based line of the parser's mark).
func yamlError(raw []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return syntaxError(raw, err)
	}
	line, reason := splitLine(te.Errors[0])
	more := ""
	if len(te.Errors) > 1 {
		more = fmt.Sprintf(" (and %d more errors)", len(te.Errors)-1)
	}
	key := keyAt(raw, line)
	if m := unknownField.FindStringSubmatch(reason); m != nil {
		if key == "" {
			key = m[1]
		}
		msg := fmt.Sprintf("line %d: unknown key %s", line, key)
		if s := closest(key, yamlKeys()); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		return errors.New(msg + more)
	}
	if env := envOfKey(key); env != "" {
		return &KeyError{Key: key, Env: env, Reason: fmt.Sprintf("line %d: %s%s", line, reason, more)}
	}
	if key != "" {
		return fmt.Errorf("line %d: %s: %s%s", line, key, reason, more)
	}
	return fmt.Errorf("line %d: %s%s", line, reason, more)
}

// syntaxError adds the text of the offending line to a YAML syntax error.
func syntaxError(raw []byte, err error) error {
	line, reason := splitLine(err.Error())
	if line == 0 {
		return err
	}
	if strings.HasPrefix(reason, "did not find expected") {
		line++ // a parser error: yaml.v3 reports the line before
	}
	lines := strings.Split(string(raw), "\n")
	if open := openingLine(lines, line, reason); open > 0 {
		line = open // an unclosed [ or {: where it opened says more than where the parser gave up
	}
	if line > len(lines) || strings.TrimSpace(lines[line-1]) == "" {
		return fmt.Errorf("yaml: line %d: %s", line, reason)
	}
	if key := lineKey(lines[line-1]); key != "" {
		return fmt.Errorf("yaml: line %d (key %s): %s", line, key, reason)
	}
	return fmt.Errorf("yaml: line %d: %s", line, reason)
}

// lineKey is the key a YAML line starts with ("jwt_secret" of `  jwt_secret: "abc`), or "". Only
// the key is ever quoted back: the rest of the line may be a secret.
func lineKey(line string) string {
	text := strings.TrimSpace(line)
	key, _, ok := strings.Cut(text, ":")
	if !ok || key == "" || strings.ContainsAny(key, "\"'{}[]#&*!|>%@` ") || strings.HasPrefix(key, "-") {
		return ""
	}
	return key
}

// openingLine is, for a flow list or mapping the parser found unclosed (reason ends in ']' or
// '}'), the last line at or before line that opens one; 0 otherwise.
func openingLine(lines []string, line int, reason string) int {
	opener := ""
	switch {
	case strings.HasSuffix(reason, "']'"):
		opener = "["
	case strings.HasSuffix(reason, "'}'"):
		opener = "{"
	default:
		return 0
	}
	for i := min(line, len(lines)); i >= 1; i-- {
		if strings.Contains(lines[i-1], opener) {
			return i
		}
	}
	return 0
}

// splitLine splits "line N: rest" (0 and msg when it is not that).
func splitLine(msg string) (int, string) {
	m := yamlLine.FindStringSubmatch(strings.TrimSpace(msg))
	if m == nil {
		return 0, msg
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[2]
}

// keyAt is the dotted path of the deepest key written on line of the YAML document raw
// ("redis.max_len"), or of the list whose item is on that line; "" when there is none.
func keyAt(raw []byte, line int) string {
	var doc yaml.Node
	if yaml.Unmarshal(raw, &doc) != nil || line == 0 {
		return ""
	}
	return findKey(&doc, "", line)
}

func findKey(n *yaml.Node, path string, line int) string {
	found := ""
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			found = pick(found, findKey(c, path, line))
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			if k.Line == line {
				found = pick(found, p)
			}
			found = pick(found, findKey(v, p, line))
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if c.Line == line && c.Kind == yaml.ScalarNode {
				found = pick(found, path)
			}
			found = pick(found, findKey(c, path, line))
		}
	}
	return found
}

// pick keeps the deeper of two key paths.
func pick(a, b string) string {
	if strings.Count(b, ".") > strings.Count(a, ".") || a == "" {
		return b
	}
	return a
}

// envOfKey is the environment variable of a YAML key path, "" when it has none.
func envOfKey(key string) string {
	for _, f := range settingFields() {
		if key != "" && f.key == key {
			return f.env
		}
	}
	return ""
}

// yamlKeys are the YAML key paths of every setting that has a variable.
func yamlKeys() []string {
	var out []string
	for _, f := range settingFields() {
		if f.env != "" {
			out = append(out, f.key)
		}
	}
	return out
}
