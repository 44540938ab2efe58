// The page's only script: clicking a node of the lineage graph (or an entry of the list, or a link) shows its
// card, marks the node and its direct neighbours, and puts its id in the URL's #fragment (links and the back
// button work); the filter narrows the list.
(function () {
  "use strict";
  var cards = document.querySelectorAll("article.card");
  var nodes = document.querySelectorAll("#lineage-graph .node");
  var edges = document.querySelectorAll("#lineage-graph .edge");
  var entries = document.querySelectorAll("#list a[data-id]");

  function show(id) {
    var found = false;
    cards.forEach(function (card) {
      card.hidden = card.getAttribute("data-id") !== id;
      found = found || !card.hidden;
    });
    document.getElementById("none").hidden = found;
    var related = {};
    edges.forEach(function (edge) {
      var hit = edge.getAttribute("data-from") === id || edge.getAttribute("data-to") === id;
      edge.classList.toggle("related", hit);
      if (hit) {
        related[edge.getAttribute("data-from")] = true;
        related[edge.getAttribute("data-to")] = true;
      }
    });
    nodes.forEach(function (node) {
      var own = node.getAttribute("data-id");
      node.classList.toggle("selected", own === id);
      node.classList.toggle("related", own !== id && !!related[own]);
    });
    entries.forEach(function (entry) {
      entry.classList.toggle("selected", entry.getAttribute("data-id") === id);
    });
    return found;
  }

  function choose(id) {
    if (show(id)) {
      history.replaceState(null, "", "#" + encodeURIComponent(id));
      document.getElementById("card-" + id).scrollIntoView({block: "nearest"});
    }
  }

  nodes.forEach(function (node) {
    node.addEventListener("click", function () { choose(node.getAttribute("data-id")); });
    node.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        choose(node.getAttribute("data-id"));
      }
    });
  });
  window.addEventListener("hashchange", function () { show(decodeURIComponent(location.hash.slice(1))); });
  document.getElementById("filter").addEventListener("input", function (event) {
    var text = event.target.value.toLowerCase();
    entries.forEach(function (entry) {
      entry.parentNode.hidden = entry.textContent.toLowerCase().indexOf(text) < 0;
    });
  });
  if (location.hash.length > 1 && show(decodeURIComponent(location.hash.slice(1)))) {
    // opened on a node: bring it into the graph's view (a click needs no scrolling: the node is in view)
    var graph = document.querySelector(".graph");
    var selected = document.querySelector("#lineage-graph .node.selected");
    if (selected) {
      var box = selected.getBoundingClientRect(), view = graph.getBoundingClientRect();
      graph.scrollTop += box.top - view.top - (view.height - box.height) / 2;
      graph.scrollLeft += box.left - view.left - (view.width - box.width) / 2;
    }
  }
})();
