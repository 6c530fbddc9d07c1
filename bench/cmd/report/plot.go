package main

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// drawPlot draws TCP throughput per configuration and convergence against the
// number of hosts, side by side in one PNG.
func drawPlot(ms []measurement, ws []watchResult, path string) error {
	var names []string
	var vals plotter.Values
	for _, m := range ms {
		// The 10 000-member row repeats meshd as shipped's own runs.
		if m.Metric == "tcp_1_stream" && m.Config != "meshd enforce 10000 members" {
			names = append(names, m.Config)
			vals = append(vals, m.Value)
		}
	}
	tp := plot.New()
	tp.Title.Text = "TCP, 1 stream (Gbit/s)"
	bars, err := plotter.NewBarChart(vals, vg.Points(18))
	if err != nil {
		return err
	}
	bars.Horizontal = true
	tp.Add(bars)
	tp.NominalY(names...)

	cp := plot.New()
	cp.Title.Text = "Convergence to every watcher (ms)"
	cp.X.Label.Text = "registered hosts"
	p50, p99 := make(plotter.XYs, len(ws)), make(plotter.XYs, len(ws))
	for i, w := range ws {
		p50[i] = plotter.XY{X: float64(w.Hosts), Y: w.P50ms}
		p99[i] = plotter.XY{X: float64(w.Hosts), Y: w.P99ms}
	}
	l50, err := plotter.NewLine(p50)
	if err != nil {
		return err
	}
	l99, err := plotter.NewLine(p99)
	if err != nil {
		return err
	}
	l99.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
	cp.Add(l50, l99)
	cp.Legend.Add("p50", l50)
	cp.Legend.Add("p99", l99)

	img := vgimg.New(vg.Points(1100), vg.Points(420))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadY: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10), PadTop: vg.Points(10), PadBottom: vg.Points(10)}
	canvases := plot.Align([][]*plot.Plot{{tp, cp}}, tiles, dc)
	tp.Draw(canvases[0][0])
	cp.Draw(canvases[0][1])
	f, err := createFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	png := vgimg.PngCanvas{Canvas: img}
	if _, err := png.WriteTo(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
