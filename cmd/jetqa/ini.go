package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// parseINI reads openQA's INI files (client.conf, workers.ini): [section]
// lines, NAME = VALUE lines, and comments starting with # or ;. A name
// given twice keeps its last value, as openQA does. Lines before the
// first section belong to implicit, or are refused when implicit is "".
// where names the file in errors; name, if not nil, writes each name as
// it is kept.
func parseINI(r io.Reader, where, implicit string, name func(string) string) (map[string]map[string]string, error) {
	sections := map[string]map[string]string{}
	section := implicit
	lines := bufio.NewScanner(r)
	for n := 1; lines.Scan(); n++ {
		line := strings.TrimSpace(lines.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = strings.TrimSpace(line[1 : len(line)-1])
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("%s line %d: %q is neither a [section] nor NAME = VALUE within one", where, n, line)
			}
			if sections[section] == nil {
				sections[section] = map[string]string{}
			}
			k = strings.TrimSpace(k)
			if name != nil {
				k = name(k)
			}
			sections[section][k] = strings.TrimSpace(v)
		}
	}
	if err := lines.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return sections, nil
}

// readINI is parseINI of the file at path.
func readINI(path, implicit string, name func(string) string) (map[string]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseINI(f, path, implicit, name)
}
