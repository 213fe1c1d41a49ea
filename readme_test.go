package gateway_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeFolderTable: the README's folder table names every Go package of the tree (a package
// under examples/ is covered by its row), and everything it names exists.
func TestReadmeFolderTable(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "| folder | what it owns |")
	if start < 0 {
		t.Fatal("README.md has no folder table")
	}
	listed := map[string]bool{}
	tick := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(text[start:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		first := strings.SplitN(line[1:], "|", 2)[0]
		parent := ""
		for _, m := range tick.FindAllStringSubmatch(first, -1) {
			name := m[1]
			if !strings.Contains(name, "/") && parent != "" && !exists(name) {
				name = parent + "/" + name // "transports/memory, `nats`": a sibling
			} else if i := strings.LastIndex(name, "/"); i > 0 {
				parent = name[:i]
			}
			listed[name] = true
		}
	}
	for name := range listed {
		if !exists(name) {
			t.Errorf("README folder table names %s, which does not exist", name)
		}
	}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		if dir == "." || listed[dir] || strings.HasPrefix(dir, "examples/") {
			return nil
		}
		t.Errorf("README folder table does not name the package %s", dir)
		listed[dir] = true // once
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}
