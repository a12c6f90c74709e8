// Fallback used by `make book` when npm cannot vendor MathJax: load MathJax 3 from its CDN
// when the page is viewed (the math then renders only online).
(function () {
  var script = document.createElement("script");
  script.src = "https://cdn.jsdelivr.net/npm/mathjax@3.2.2/es5/tex-svg.js";
  script.async = true;
  document.head.appendChild(script);
})();
