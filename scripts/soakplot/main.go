// Command soakplot draws the samples of scripts/soak.sh as PNG line charts, one per metric.
//
//	soakplot -csv samples.csv -out DIR [-title TEXT]
//
// The CSV's first column is the time in minutes since the start; every other column is named
// <series>:<metric> (node1:rss_mib, broker:used_memory_mib). Each metric becomes DIR/<metric>.png
// with one line per series. It is a module of its own so that the gateway's go.mod does not carry
// gonum/plot and its fonts.
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func main() {
	in := flag.String("csv", "", "samples `file` written by scripts/soak.sh")
	out := flag.String("out", ".", "`directory` for the PNGs")
	title := flag.String("title", "soak", "chart title prefix")
	flag.Parse()
	if err := run(*in, *out, *title); err != nil {
		fmt.Fprintln(os.Stderr, "soakplot:", err)
		os.Exit(1)
	}
}

type series struct {
	name string
	pts  plotter.XYs
}

func run(in, out, title string) error {
	if in == "" {
		return errors.New("-csv is required")
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(f)
	head, err := r.Read()
	if err != nil {
		return fmt.Errorf("%s: header: %w", in, err)
	}
	if len(head) < 2 {
		return fmt.Errorf("%s: want a time column and at least one <series>:<metric> column", in)
	}
	metrics := map[string][]*series{}
	var order []string
	cols := make([]*series, len(head))
	for i, h := range head[1:] {
		name, metric, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("%s: column %q is not <series>:<metric>", in, h)
		}
		s := &series{name: name}
		if _, seen := metrics[metric]; !seen {
			order = append(order, metric)
		}
		metrics[metric] = append(metrics[metric], s)
		cols[i+1] = s
	}
	line := 1
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line++
		if err != nil {
			return fmt.Errorf("%s:%d: %w", in, line, err)
		}
		x, err := strconv.ParseFloat(rec[0], 64)
		if err != nil {
			return fmt.Errorf("%s:%d: time %q: %w", in, line, rec[0], err)
		}
		for i := 1; i < len(rec) && i < len(cols); i++ {
			y, err := strconv.ParseFloat(rec[i], 64)
			if err != nil {
				continue // a sample that could not be read (empty): a hole in the line
			}
			cols[i].pts = append(cols[i].pts, plotter.XY{X: x, Y: y})
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, m := range order {
		p := plot.New()
		p.Title.Text = title + ": " + m
		p.X.Label.Text = "minutes"
		p.Y.Label.Text = m
		p.Y.Min = 0
		p.Legend.Top = true
		p.Legend.Left = true // the lines rise in the first minute: the top left is free
		p.Add(plotter.NewGrid())
		for i, s := range metrics[m] {
			if len(s.pts) == 0 {
				continue
			}
			l, err := plotter.NewLine(s.pts)
			if err != nil {
				return fmt.Errorf("%s %s: %w", m, s.name, err)
			}
			l.Color = plotutil.Color(i)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(s.name, l)
		}
		p.Y.Max = max(p.Y.Max*1.4, 1) // room for the legend above the lines
		p.BackgroundColor = color.White
		path := filepath.Join(out, m+".png")
		if err := p.Save(8*vg.Inch, 3.5*vg.Inch, path); err != nil {
			return err
		}
		fmt.Println(path)
	}
	return nil
}
